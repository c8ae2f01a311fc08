#!/usr/bin/env python3
"""Comparison benchmark (not a test): the same workloads against Spate, the peer brokers that
install here (Tansu), and the machine's raw disk and loopback limits, in one run.

    bench/compare.sh [--quick] [--with-tansu | --no-tansu] [--workloads a,b] [--repeat N]
                     [--no-1shard] [--update-readme]

For each broker, on a fresh broker process and a fresh data dir per run:
  - every spate-bench workload in bench/workloads/ (all but smoke.toml, unless --workloads);
  - librdkafka's rdkafka_performance: produce acks=1 and acks=all, consume (-G, from the
    start), and per-message publish latency at a fixed rate (-l -A, acks=1, linger.ms=1).
Raw limits: dd 1 GiB with conv=fdatasync and with oflag=direct on the disk of the data dirs,
fdatasync latency after a 4 KiB append, loopback TCP with iperf3 (one stream, default and
1 MiB writes), and loopback TCP into a file (iperf3 -F: the ceiling of any produce here).

Results: bench/results/compare-<stamp>.json and .md, and bench/results/compare-<stamp>/ with
the JSON and SVG chart spate-bench wrote for each run. Broker and load generators share this
machine's cores: every figure says so.

Third-party tools are fetched and built on demand, never committed: rdkafka_performance goes to
bench/.cache/ (gitignored), iperf3 comes from apt, Tansu from `cargo install` (only with
--with-tansu; about 15-20 min on 2 cores, run with nice -n 19). MB in the tables is MiB
(1,048,576 bytes), as in spate-bench's reports; dd and rdkafka_performance figures are
converted to it.
"""

import argparse
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
MIB = 1024 * 1024
TOPIC_PARTITIONS = 16  # rdkafka_performance topics; the spate-bench workloads use 16 too
# Spate's runs: the default (one shard per core) and one shard, which leaves a core to the load
# generator on a machine where the two share the cores (what Redpanda's dev mode does, --smp 1).
SPATE_SHARDS = {"spate": 2, "spate-1shard": 1}
RDK_RATE = 51200  # msgs/s of 1 KiB for the latency run: 50 MiB/s, as latency-50mbps


def log(msg):
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Runs a command, returning stdout; raises with its output on failure."""
    kw.setdefault("timeout", 600)
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))} exited "
                           f"{p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rel(path):
    """A path relative to the repo when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def percentile(sorted_xs, p):
    if not sorted_xs:
        return None
    k = min(len(sorted_xs) - 1, max(0, int(round(p / 100.0 * len(sorted_xs) + 0.5)) - 1))
    return sorted_xs[k]


# ---------------------------------------------------------------------------------------------
# Machine and raw limits


def machine(work):
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                  if l.startswith("model name")), "unknown")
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    df = sh(["df", "-hT", str(work)]).splitlines()[-1].split()
    disk = {"device": df[0], "fstype": df[1], "size": df[2], "avail": df[4]}
    try:
        dev = os.path.basename(df[0])
        rota = Path(f"/sys/block/{dev}/queue/rotational").read_text().strip()
        disk["rotational"] = rota == "1"
        sched = Path(f"/sys/block/{dev}/queue/scheduler").read_text().strip()
        disk["scheduler"] = sched
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "mem_total_gib": round(mem_kib / MIB, 1), "disk": disk,
            "hostname": socket.gethostname(),
            "note": f"broker and load generator share the same {os.cpu_count()} cores "
                    "(Spate runs --shards 2, each shard pinned to a core, and again with --shards 1; the "
                    "clients are not pinned)"}


def dd(path, count, flags):
    out = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={count}", *flags],
                         capture_output=True, text=True, check=True).stderr
    os.remove(path)
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", out)
    return int(m.group(1)) / float(m.group(2)) / MIB


def fdatasync_latency(path, n):
    """us per fdatasync after a 4 KiB append: the floor of an acks=all answer."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    buf = os.urandom(4096)
    xs = []
    try:
        for _ in range(n):
            os.write(fd, buf)
            t = time.perf_counter_ns()
            os.fdatasync(fd)
            xs.append((time.perf_counter_ns() - t) / 1000)
    finally:
        os.close(fd)
        os.remove(path)
    xs.sort()
    return {"samples": n, "p50_ms": percentile(xs, 50) / 1000, "p99_ms": percentile(xs, 99) / 1000,
            "p99_9_ms": percentile(xs, 99.9) / 1000, "max_ms": xs[-1] / 1000}


def ensure_iperf3():
    if shutil.which("iperf3"):
        return True
    log("iperf3 missing: apt-get install -y iperf3")
    r = subprocess.run(["apt-get", "install", "-y", "iperf3"], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "iperf3"], capture_output=True)
    return shutil.which("iperf3") is not None


def iperf3(seconds, length=None, into=None, nbytes=None):
    """Loopback MiB/s of one iperf3 stream; with `into`, the server writes what it receives
    to that file (page cache, no fsync): the ceiling of a produce on this machine, where the
    bytes cross loopback and are copied into a file, with sender and receiver on its cores."""
    port = free_port()
    srv_cmd = ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", str(port)]
    if into:
        srv_cmd += ["-F", str(into)]
    srv = subprocess.Popen(srv_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:  # wait for the listener without using up "-1"
            if sh(["ss", "-ltnH", f"sport = :{port}"]).strip():
                break
            time.sleep(0.05)
        cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-J"]
        cmd += ["-n", nbytes] if nbytes else ["-t", str(seconds)]
        if length:
            cmd += ["-l", length]
        j = json.loads(sh(cmd, timeout=(seconds or 60) + 30))
        return j["end"]["sum_received"]["bits_per_second"] / 8 / MIB
    finally:
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        if into:
            Path(into).unlink(missing_ok=True)


def raw_limits(work, quick):
    mib = 256 if quick else 1024
    r = {"dd_mib": mib}
    log(f"raw: dd {mib} MiB conv=fdatasync / oflag=direct in {work}")
    r["disk_seq_write_fdatasync_MiBps"] = dd(work / "dd.raw", mib, ["conv=fdatasync"])
    r["disk_seq_write_direct_MiBps"] = dd(work / "dd.raw", mib, ["oflag=direct"])
    log("raw: fdatasync after 4 KiB appends")
    r["fdatasync_4k_append"] = fdatasync_latency(work / "sync.raw", 300 if quick else 2000)
    if ensure_iperf3():
        secs = 2 if quick else 5
        log(f"raw: iperf3 loopback, one stream, {secs} s (default writes, then 1 MiB writes)")
        r["loopback_iperf3_MiBps"] = iperf3(secs)
        r["loopback_iperf3_1MiB_writes_MiBps"] = iperf3(secs, "1M")
        # As much as a throughput run writes: on a VM, memory the guest has not touched lately
        # (a deleted data dir's page cache, given back) costs a host fault per page on first
        # write, so a short run into a recycled cache would overstate what a broker can reach.
        into = "1G" if quick else "6G"
        log(f"raw: iperf3 loopback into a file in {work}, {into}B")
        r["loopback_into_file_MiBps"] = iperf3(None, into=work / "iperf3.raw", nbytes=into)
    else:
        log("raw: iperf3 could not be installed; no loopback figure")
    return r


def best_raw(runs):
    """The best of each raw figure over the runs (the limit is what the machine can do)."""
    if not runs:
        return {"dd_mib": 0}
    best = {"dd_mib": runs[0]["dd_mib"], "runs": len(runs)}
    for k in ("disk_seq_write_fdatasync_MiBps", "disk_seq_write_direct_MiBps",
              "loopback_iperf3_MiBps", "loopback_iperf3_1MiB_writes_MiBps",
              "loopback_into_file_MiBps"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            best[k] = max(vals)
    syncs = [r["fdatasync_4k_append"] for r in runs if r.get("fdatasync_4k_append")]
    if syncs:
        best["fdatasync_4k_append"] = min(syncs, key=lambda x: x["p50_ms"])
    return best


# ---------------------------------------------------------------------------------------------
# Tools: spate (release), rdkafka_performance, tansu


def build_spate(build):
    if build:
        log("cargo build --release (spate, spate-bench)")
        sh(["cargo", "build", "--release", "--bins"], cwd=REPO, timeout=3600)
    return REPO / "target" / "release" / "spate", REPO / "target" / "release" / "spate-bench"


def rdkafka_performance(ssl=False):
    """librdkafka's benchmark client, built once into bench/.cache; `ssl`: with OpenSSL (TLS
    and SASL/SCRAM, for bench/tls_rdkafka.py; needs the libssl-dev package)."""
    binp = CACHE / ("rdkafka_performance-ssl" if ssl else "rdkafka_performance")
    if binp.exists():
        return binp
    CACHE.mkdir(parents=True, exist_ok=True)
    log("building rdkafka_performance from the librdkafka sources rdkafka-sys ships (~2 min)")
    with tempfile.TemporaryDirectory(prefix="rdk-") as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        (tmp / "src" / "main.rs").write_text("fn main() {}\n")
        (tmp / "Cargo.toml").write_text('[package]\nname = "rdk-fetch"\nversion = "0.0.0"\n'
                                        'edition = "2021"\n[dependencies]\nrdkafka-sys = "4"\n')
        sh(["cargo", "fetch"], cwd=tmp, timeout=1200)
        meta = json.loads(sh(["cargo", "metadata", "--format-version", "1"], cwd=tmp))
        pkg = next(p for p in meta["packages"] if p["name"] == "rdkafka-sys")
        src = Path(pkg["manifest_path"]).parent / "librdkafka"
        build = tmp / "librdkafka"
        shutil.copytree(src, build)
        for f in build.rglob("*"):  # registry sources are read-only
            f.chmod(f.stat().st_mode | 0o200)
        sh(["./configure", "--enable-ssl" if ssl else "--disable-ssl", "--disable-gssapi",
            "--disable-zstd",
            "--disable-lz4-ext", "--disable-curl", "--disable-syslog", "--disable-regex-ext"],
           cwd=build)
        sh(["make", f"-j{os.cpu_count()}", "libs"], cwd=build, timeout=3600)
        sh(["make", "-C", "examples", "rdkafka_performance"], cwd=build, timeout=600)
        shutil.copy2(build / "examples" / "rdkafka_performance", binp)
        (CACHE / (binp.name + ".version")).write_text(pkg["version"] + "\n")
    return binp


def find_tansu():
    p = shutil.which("tansu") or (Path.home() / ".cargo" / "bin" / "tansu")
    return Path(p) if Path(p).exists() else None


def install_tansu():
    log("installing Tansu: nice -n 19 cargo install tansu --locked --features dynostore "
        "(15-20 min on 2 cores); log in bench/.cache/tansu-install.log")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "tansu-install.log", "wb") as f:
        r = subprocess.run(["nice", "-n", "19", "cargo", "install", "tansu", "--locked",
                            "--features", "dynostore"], stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        log("Tansu install failed; see bench/.cache/tansu-install.log")
    return find_tansu()


# ---------------------------------------------------------------------------------------------
# Brokers


def cpu_seconds(pid):
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return None


class Broker:
    """One broker process on a fresh data dir; a context manager."""

    def __init__(self, kind, binary, work, tag):
        self.kind, self.binary, self.work, self.tag = kind, binary, work, tag
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.data = work / f"{kind}-{tag}-data"
        self.log = work / f"{kind}-{tag}.log"

    def command(self):
        if self.kind in SPATE_SHARDS:
            return [str(self.binary), "serve", "--listen", self.bootstrap, "--data-dir",
                    str(self.data), "--shards", str(SPATE_SHARDS[self.kind])]
        url = f"tcp://{self.bootstrap}"
        return [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url",
                url, "--storage-engine", "memory://tansu/"]

    def __enter__(self):
        self.data.mkdir(parents=True)
        self.f = open(self.log, "wb")
        env = dict(os.environ)
        if self.kind == "tansu":
            env.setdefault("RUST_LOG", "warn")
        self.p = subprocess.Popen(self.command(), stdout=self.f, stderr=subprocess.STDOUT,
                                  cwd=self.data, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.p.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-3000:]}")
            if self.ready():
                self.cpu0 = cpu_seconds(self.p.pid)
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} not ready in 120 s: {self.log.read_text()[-2000:]}")

    def ready(self):
        if self.kind in SPATE_SHARDS:
            return "broker ready" in self.log.read_text(errors="replace")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def cpu_used(self):
        c = cpu_seconds(self.p.pid)
        return None if c is None or self.cpu0 is None else round(c - self.cpu0, 2)

    def __exit__(self, *exc):
        self.died = self.p.poll()  # None while it still runs, as it should
        if self.died is not None:
            log(f"{self.kind} exited {self.died} during the run; log tail:\n"
                f"{self.log.read_text(errors='replace')[-1500:]}")
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.f.close()
        shutil.rmtree(self.data, ignore_errors=True)
        os.sync()  # the next run starts with no writeback of this one's data in flight


def create_topic(bootstrap, name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    adm = AdminClient({"bootstrap.servers": bootstrap})
    adm.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline:  # every partition has a leader
        md = adm.list_topics(name, timeout=10).topics.get(name)
        if md and not md.error and len(md.partitions) == partitions and \
                all(p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"topic {name} has no leaders after 30 s")


# ---------------------------------------------------------------------------------------------
# spate-bench


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v)


def workload_files(names, quick, work):
    files = sorted(Path(p) for p in glob.glob(str(REPO / "bench" / "workloads" / "*.toml")))
    if names:
        wanted = names.split(",")
        files = [f for f in files if f.stem in wanted]
        missing = set(wanted) - {f.stem for f in files}
        if missing:
            raise SystemExit(f"no such workloads: {', '.join(sorted(missing))}")
    else:
        files = [f for f in files if f.stem != "smoke"]
    if not quick:
        return files
    out = []
    qdir = work / "quick-workloads"
    qdir.mkdir(exist_ok=True)
    for f in files:  # the same workloads with short windows and small backlogs
        w = tomllib.loads(f.read_text())
        w.setdefault("name", f.stem)
        w["warmup_seconds"] = min(w.get("warmup_seconds", 0), 1)
        w["duration_seconds"] = min(w["duration_seconds"], 5 if w.get("producer_rate") != 0 else 30)
        if w.get("backlog_messages"):
            w["backlog_messages"] = min(w["backlog_messages"], 200_000)
        q = qdir / f.name
        q.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in w.items()))
        out.append(q)
    return out


def run_spate_bench(bench_bin, broker, workload, out_dir):
    label = f"{broker.kind}-{workload.stem}"
    before = set(out_dir.glob(f"{label}-*.json"))
    cmd = [str(bench_bin), "--bootstrap-server", broker.bootstrap, "--workload", str(workload),
           "--out-dir", str(out_dir), "--label", label]
    log(f"{broker.kind}: spate-bench {workload.stem}")
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    new = sorted(set(out_dir.glob(f"{label}-*.json")) - before)
    if new and p.returncode == 0:  # the progress lines (a line a second): where a stall was
        new[-1].with_suffix(".log").write_text(p.stderr)
    res = {"command": " ".join(cmd[1:]).replace(str(REPO) + "/", ""), "exit": p.returncode,
           "wall_s": round(time.time() - t0, 1), "broker_cpu_s": broker.cpu_used()}
    if p.returncode != 0:
        res["error"] = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"
        log(f"{broker.kind}: spate-bench {workload.stem} exited {p.returncode}: {res['error']}")
    if new and p.returncode != 0:
        # A failed run still writes its report, with figures cut short: none of them count.
        res["workload"] = json.loads(new[-1].read_text()).get("workload")
        for f in new:
            f.unlink()
            f.with_suffix(".svg").unlink(missing_ok=True)
    elif new:
        j = json.loads(new[-1].read_text())
        res["json"] = rel(new[-1])
        svg = new[-1].with_suffix(".svg")
        if svg.exists():
            res["chart"] = rel(svg)
        res["progress_log"] = rel(new[-1].with_suffix(".log"))
        res["publish"] = j["publish"]
        res["consume"] = j.get("consume")
        res["totals"] = j.get("totals")
        res["workload"] = j.get("workload")
    print(p.stdout, file=sys.stderr, end="")
    return res


# ---------------------------------------------------------------------------------------------
# rdkafka_performance


def rdk(binp, args, timeout):
    p = subprocess.run([str(binp), *args], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"rdkafka_performance {' '.join(args)} exited {p.returncode}: "
                           f"{p.stdout[-1500:]} {p.stderr[-1500:]}")
    return p.stdout + p.stderr


def rdk_produce_summary(out, size):
    m = re.findall(r"% (\d+) messages produced \((\d+) bytes\), (\d+) delivered \(offset -?\d+, "
                   r"(\d+) failed\) in (\d+)ms", out)
    if not m:
        raise RuntimeError(f"no produce summary in: {out[-1500:]}")
    msgs, _, delivered, failed, ms = map(int, m[-1])
    secs = ms / 1000
    return {"messages": msgs, "delivered": delivered, "failed": failed, "seconds": secs,
            "msgs_per_sec": delivered / secs, "mb_per_sec": delivered * size / MIB / secs}


def rdk_consume_summary(out):
    m = re.findall(r"% (\d+) messages \((\d+) bytes\) consumed in (\d+)ms", out)
    if not m:
        raise RuntimeError(f"no consume summary in: {out[-1500:]}")
    msgs, by, ms = map(int, m[-1])
    secs = ms / 1000
    return {"messages": msgs, "bytes": by, "seconds": secs, "msgs_per_sec": msgs / secs,
            "mb_per_sec": by / MIB / secs}


def run_rdkafka(binp, broker, n, lat_seconds):
    """Produce acks=1 and acks=all (n x 1 KiB each), consume all of it with a group from the
    start, then publish latency at RDK_RATE msgs/s for lat_seconds (acks=1, linger.ms=1)."""
    res = {"client": f"rdkafka_performance (librdkafka {rdk_version()})", "message_size": 1024,
           "partitions": TOPIC_PARTITIONS}
    b = broker.bootstrap
    topic = "rdk-tp"
    create_topic(b, topic, TOPIC_PARTITIONS)
    common = ["-t", topic, "-b", b, "-s", "1024", "-c", str(n), "-X", "enable.idempotence=false"]
    for acks, key in (("1", "produce_acks_1"), ("-1", "produce_acks_all")):
        args = ["-P", *common, "-a", acks]
        log(f"{broker.kind}: rdkafka_performance {' '.join(args)}")
        try:
            r = rdk_produce_summary(rdk(binp, args, 600), 1024)
            r["args"] = " ".join(args).replace(b, "BROKER")
            res[key] = r
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            res[key] = {"error": str(e)[-500:]}
            log(f"{broker.kind}: {key} failed: {str(e)[-300:]}")
    total = sum(res[k].get("delivered", 0) for k in ("produce_acks_1", "produce_acks_all"))
    if total:
        args = ["-G", f"rdk-grp-{int(time.time())}", "-t", topic, "-b", b, "-c", str(total),
                "-X", "auto.offset.reset=earliest"]
        log(f"{broker.kind}: rdkafka_performance {' '.join(args)}")
        try:
            r = rdk_consume_summary(rdk(binp, args, 600))
            r["args"] = " ".join(args).replace(b, "BROKER")
            res["consume"] = r
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            res["consume"] = {"error": str(e)[-500:]}
            log(f"{broker.kind}: consume failed: {str(e)[-300:]}")
    # Latency: a fresh topic, a fixed rate; -A writes one latency per message, in us.
    topic = "rdk-lat"
    create_topic(b, topic, TOPIC_PARTITIONS)
    lat_file = broker.work / f"{broker.kind}-latency.txt"
    count = RDK_RATE * lat_seconds
    args = ["-P", "-t", topic, "-b", b, "-s", "1024", "-c", str(count), "-a", "1",
            "-r", str(RDK_RATE), "-l", "-A", str(lat_file), "-X", "linger.ms=1",
            "-X", "enable.idempotence=false"]
    log(f"{broker.kind}: rdkafka_performance {' '.join(args)}")
    try:
        r = rdk_produce_summary(rdk(binp, args, lat_seconds * 4 + 120), 1024)
        lines = [int(x) for x in lat_file.read_text().split()]  # in delivery order
        xs = sorted(lines[len(lines) // 10:])  # the first 10% is the warm-up
        r["latency_ms"] = {"samples": len(xs), "p50": percentile(xs, 50) / 1000,
                           "p99": percentile(xs, 99) / 1000,
                           "p99_9": percentile(xs, 99.9) / 1000, "max": xs[-1] / 1000,
                           "mean": statistics.fmean(xs) / 1000,
                           "note": "produce() to delivery report, the first 10% dropped as warm-up"}
        r["target_rate_msgs_per_sec"] = RDK_RATE
        r["args"] = " ".join(args).replace(b, "BROKER").replace(str(lat_file), "FILE")
        res["latency"] = r
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
        res["latency"] = {"error": str(e)[-500:]}
        log(f"{broker.kind}: latency run failed: {str(e)[-300:]}")
    finally:
        lat_file.unlink(missing_ok=True)
    res["broker_cpu_s"] = broker.cpu_used()
    return res


def median_of_runs(runs):
    """One result from repeated runs: each figure is its median over the runs that did not fail
    (a failed part of a run, one with "error", is left out of that part's figures); every run
    stays in "runs" when there was more than one."""
    if len(runs) == 1:
        return runs[0]

    def merge(xs):
        ok = [x for x in xs if not (isinstance(x, dict) and "error" in x)] or xs[:1]
        first = ok[0]
        if isinstance(first, dict):
            return {k: merge([x[k] for x in ok if isinstance(x, dict) and k in x])
                    for k in first}
        nums = [x for x in ok if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if len(nums) == len(ok):
            return statistics.median(nums)
        return first

    out = merge(runs)
    out["runs"] = runs
    return out


def rdk_version():
    f = CACHE / "rdkafka_performance.version"
    v = f.read_text().strip() if f.exists() else ""
    return v.split("+", 1)[1] if "+" in v else (v or "?")


# ---------------------------------------------------------------------------------------------
# Report


def get(d, *path):
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def produce_limit(durable, sync, into, loop):
    """The tightest raw ceiling of a produce: loopback TCP into a file when it was measured
    (the bytes must cross loopback and land in a file), else loopback alone; for acks=all also
    the disk's fdatasync'd write, whichever is lower."""
    net = (into, "loopback TCP into a file") if into else (loop, "loopback TCP")
    if durable and sync is not None and (net[0] is None or sync < net[0]):
        return sync, "disk write + fdatasync"
    return net


def rows(results):
    """(label, {broker: value}, limit, limit name, unit, higher is better)"""
    raw = results["raw"]
    loop = raw.get("loopback_iperf3_MiBps")
    sync = raw.get("disk_seq_write_fdatasync_MiBps")
    into = raw.get("loopback_into_file_MiBps")
    fsl = raw.get("fdatasync_4k_append", {})
    brokers = results["brokers"]
    out = []

    def add(label, path, unit, limit=None, limit_name=None, higher=True):
        vals = {b: (path(brokers[b]) if callable(path) else get(brokers[b], *path))
                for b in brokers}
        if all(v is None for v in vals.values()):
            return
        out.append((label, vals, limit, limit_name, unit, higher))

    def cpu_per_gib(w):
        def f(b):
            r = get(b, "spate_bench", w)
            n, size, cpu = get(r, "totals", "produced"), get(r, "workload", "message_size"), \
                get(r, "broker_cpu_s")
            return cpu / (n * size / 2**30) if n and size and cpu is not None else None
        return f

    wl = sorted({w for b in brokers.values() for w in b.get("spate_bench", {})})
    for w in wl:
        sb = ("spate_bench", w)
        spec = next((get(b, "spate_bench", w, "workload") for b in brokers.values()
                     if get(b, "spate_bench", w, "workload") is not None), {})
        acks = {-1: "all", 0: "0", 1: "1"}.get(spec.get("acks"), "?")
        durable = spec.get("acks") == -1
        plim, pname = produce_limit(durable, sync, into, loop)
        name = f"{w} (acks={acks})"
        if spec.get("producer_rate") != 0:
            add(f"{name}: publish MiB/s", (*sb, "publish", "throughput", "mb_per_sec"), "MiB/s",
                plim, pname)
            add(f"{name}: publish msgs/s", (*sb, "publish", "throughput", "msgs_per_sec"),
                "msgs/s")
            for p, nice in (("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9"), ("max", "max")):
                lim, lname = None, None
                if durable and p in ("p50", "p99"):
                    lim, lname = fsl.get(f"{p}_ms"), f"fdatasync of a 4 KiB append, {nice}"
                add(f"{name}: publish {nice} ms", (*sb, "publish", "latency_ms", p), "ms",
                    lim, lname, higher=False)
            add(f"{name}: end-to-end p99 ms", (*sb, "consume", "end_to_end_latency_ms", "p99"),
                "ms", higher=False)
        add(f"{name}: consume MiB/s", (*sb, "consume", "throughput", "mb_per_sec"), "MiB/s",
            loop, "loopback TCP")
        add(f"{name}: broker CPU s per GiB produced", cpu_per_gib(w), "s/GiB", higher=False)
    rk = ("rdkafka_performance",)
    add("rdkafka_performance -P acks=1: MiB/s", (*rk, "produce_acks_1", "mb_per_sec"),
        "MiB/s", *produce_limit(False, sync, into, loop))
    add("rdkafka_performance -P acks=1: msgs/s", (*rk, "produce_acks_1", "msgs_per_sec"),
        "msgs/s")
    add("rdkafka_performance -P acks=all: MiB/s", (*rk, "produce_acks_all", "mb_per_sec"),
        "MiB/s", *produce_limit(True, sync, into, loop))
    add("rdkafka_performance -P acks=all: msgs/s", (*rk, "produce_acks_all", "msgs_per_sec"),
        "msgs/s")
    add("rdkafka_performance -G consume: MiB/s", (*rk, "consume", "mb_per_sec"), "MiB/s",
        loop, "loopback TCP")
    lat = f"rdkafka_performance -l -r {RDK_RATE} acks=1"
    add(f"{lat}: achieved msgs/s", (*rk, "latency", "msgs_per_sec"), "msgs/s")
    for p, nice in (("p50", "p50"), ("p99", "p99"), ("p99_9", "p99.9"), ("max", "max")):
        add(f"{lat}: {nice} ms", (*rk, "latency", "latency_ms", p), "ms", higher=False)
    return out


def fmt(v, unit=""):
    if v is None:
        return "—"
    if unit == "msgs/s" or (isinstance(v, (int, float)) and abs(v) >= 1000):
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def ratio(a, b):
    if a is None or b in (None, 0):
        return "—"
    return f"{a / b:.2f}"


def markdown(results):
    names = {"spate": "Spate", "spate-1shard": "Spate 1 shard", "tansu": "Tansu"}
    brokers = list(results["brokers"])
    peers = [b for b in brokers if b not in SPATE_SHARDS]
    m = results["machine"]
    head = ["figure", *[names.get(b, b) for b in brokers], "raw limit", "Spate / limit",
            *[f"Spate / {names.get(p, p)}" for p in peers]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, vals, lim, lname, unit, higher in rows(results):
        lim_s = f"{fmt(lim, unit)} ({lname})" if lim is not None else "—"
        cells = [label,
                 *[fmt(vals[b], unit) for b in brokers], lim_s, ratio(vals.get("spate"), lim),
                 *[ratio(vals.get("spate"), vals[p]) for p in peers]]
        lines.append("| " + " | ".join(cells) + " |")
    raw = results["raw"]
    fsl = raw.get("fdatasync_4k_append", {})
    runs = results.get("raw_runs", [])

    def each(k):
        if len(runs) < 2:
            return ""
        return " (runs: " + ", ".join(fmt(r.get(k)) for r in runs) + ")"
    rawl = [f"| raw limit (best of {len(runs)} runs: before and after the brokers) | figure |",
            "|---|---|",
            f"| disk: dd {raw['dd_mib']} MiB bs=1M conv=fdatasync | {fmt(raw.get('disk_seq_write_fdatasync_MiBps'))} MiB/s{each('disk_seq_write_fdatasync_MiBps')} |",
            f"| disk: dd {raw['dd_mib']} MiB bs=1M oflag=direct | {fmt(raw.get('disk_seq_write_direct_MiBps'))} MiB/s{each('disk_seq_write_direct_MiBps')} |",
            f"| disk: fdatasync after a 4 KiB append, p50 / p99 / max | {fmt(fsl.get('p50_ms'))} / {fmt(fsl.get('p99_ms'))} / {fmt(fsl.get('max_ms'))} ms"
            + ("" if len(runs) < 2 else " (p50 of the runs: " + ", ".join(
                fmt(get(r, "fdatasync_4k_append", "p50_ms")) for r in runs) + ")") + " |",
            f"| loopback TCP: iperf3, one stream, default writes | {fmt(raw.get('loopback_iperf3_MiBps'))} MiB/s{each('loopback_iperf3_MiBps')} |",
            f"| loopback TCP: iperf3, one stream, 1 MiB writes | {fmt(raw.get('loopback_iperf3_1MiB_writes_MiBps'))} MiB/s{each('loopback_iperf3_1MiB_writes_MiBps')} |",
            f"| loopback TCP into a file: iperf3 -F, the server writes what it receives (page cache, no fsync) | {fmt(raw.get('loopback_into_file_MiBps'))} MiB/s{each('loopback_into_file_MiBps')} |"]
    notes = [
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_gib']} GiB, kernel "
        f"{m['kernel']}, disk {m['disk']['device']} ({m['disk']['fstype']}). **Broker and load "
        f"generator share the same {m['nproc']} cores**: every figure includes the client's CPU "
        "cost, so brokers that use less CPU per message leave more to the client. Load average "
        f"at start / end: {' '.join(results.get('loadavg_start', []))} / "
        f"{' '.join(results.get('loadavg_end', []))} (other work on the machine adds noise; the "
        "raw limits are measured before and after the brokers and the best figure is used).",
        "MB = MiB (1,048,576 bytes). Latencies in ms. A ratio below 1 is better for latency "
        "rows, above 1 for throughput rows. \"Limit\" is the raw figure of the resource the row "
        "is bound by: for produce, loopback TCP into a file (iperf3 writing what it receives to "
        "a file on the data disk: the bytes must cross loopback and be copied into the page "
        "cache, with sender and receiver on the same cores), and for acks=all the disk's "
        "fdatasync'd sequential write if that is lower (and a 4 KiB fdatasync for latency); "
        "loopback TCP for consume.",
        "Spate: `spate serve --shards 2` (one shard per core, the default), data on the same "
        "disk as dd's file; acks=all is fdatasync'd before the answer (group commit). \"Spate "
        "1 shard\" is the same broker with `--shards 1`: one pinned core for the broker, the "
        "other left to the load generator. Every request on a connection fans out to the "
        "shards that own its partitions, so with two shards each Produce also wakes the other "
        "shard and waits for its answer; the \"Spate / peer\" ratios use the default.",
    ]
    if "tansu" in results["brokers"]:
        notes.append(f"Tansu {results['brokers']['tansu'].get('version', '').split()[-1]}: "
                     "`--storage-engine memory://tansu/`, so its acks=all rows are not durable "
                     "and not a like-for-like comparison with Spate's fdatasync'd acks=all. "
                     "Tansu's durable engines need what this machine lacks or a different "
                     "build: s3:// an S3 endpoint, postgres:// a PostgreSQL server and "
                     "`--features postgres`, sqlite:// `--features libsql` (not built here).")
    for b, r in results["brokers"].items():
        failed = {k: v["error"] for k, v in r.get("spate_bench", {}).items() if v.get("error")}
        if failed:
            why = sorted(set(failed.values()))
            notes.append(f"spate-bench failed against {names.get(b, b)} on "
                         f"{', '.join(sorted(failed))} (a dash in its column): "
                         + "; ".join(f"`{w}`" for w in why))
    notes.append("spate-bench workloads: bench/workloads/*.toml (16 partitions, 2 producers, "
                 "2 consumers). rdkafka_performance: librdkafka defaults (linger.ms=5, "
                 f"batch.size 1 MB), 1 KiB messages, {TOPIC_PARTITIONS} partitions; the latency "
                 f"run is acks=1, linger.ms=1, -r {RDK_RATE} (produce() to delivery report).")
    if results.get("repeat", 1) > 1:
        notes.append(f"Each figure is the median of {results['repeat']} runs, the brokers taking "
                     "turns on each workload; every run's figures are in the JSON (\"runs\").")
    if results.get("quick"):
        notes.append("**--quick run**: short windows (5 s, 1 s warm-up), small backlogs; "
                     "figures are indicative only.")
    return lines, rawl, notes


def write_results(results, out_dir, stamp):
    (out_dir / f"compare-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    table, rawl, notes = markdown(results)
    md = [f"# Comparison benchmark {results['date']}", "",
          f"Command: `{results['command']}` (commit {results['commit']}).", "",
          *table, "", *rawl, "", *[wrap(n, bullet=True) for n in notes], ""]
    charts = sorted((out_dir / f"compare-{stamp}").glob("*.svg"))
    if charts:
        md += ["Latency charts (spate-bench):", ""]
        md += [f"- [{c.stem}](compare-{stamp}/{c.name})" for c in charts]
        md.append("")
    errors = [(b, k, v["error"]) for b, r in results["brokers"].items()
              for k, v in list(r.get("spate_bench", {}).items()) +
              list(r.get("rdkafka_performance", {}).items())
              if isinstance(v, dict) and v.get("error")]
    if errors:
        md += ["Runs that failed:", ""] + [f"- {b} {k}: {e}" for b, k, e in errors] + [""]
    (out_dir / f"compare-{stamp}.md").write_text("\n".join(md))
    return table, rawl, notes


def wrap(text, bullet=False):
    if bullet:
        return textwrap.fill(text, 96, initial_indent="- ", subsequent_indent="  ",
                             break_on_hyphens=False, break_long_words=False)
    return textwrap.fill(text, 96, break_on_hyphens=False, break_long_words=False)


def update_readme(results, stamp, table, rawl, notes):
    readme = REPO / "README.md"
    text = readme.read_text()
    section = ["## Benchmarks", "",
               wrap("`bench/compare.sh` runs the spate-bench workloads (`bench/workloads/`) and "
                    "librdkafka's `rdkafka_performance` against Spate and the peer brokers that "
                    "install here (Tansu: `--with-tansu` installs it), next to the machine's raw "
                    "disk and loopback limits, and writes "
                    "`bench/results/compare-<date>.{json,md}` with spate-bench's charts:"), "",
               "    bench/compare.sh [--quick] [--with-tansu] [--repeat N]", "",
               wrap(f"Latest results (`{results['command']}`, "
                    f"[bench/results/compare-{stamp}.md](bench/results/compare-{stamp}.md)):"),
               "", *table, "", *rawl, "", *[wrap(n, bullet=True) for n in notes], ""]
    m = re.search(r"^## Benchmarks\n", text, re.M)
    if m:
        nxt = re.search(r"^## ", text[m.end():], re.M)
        end = m.end() + nxt.start() if nxt else len(text)
        text = text[:m.start()] + "\n".join(section) + ("\n" if nxt else "") + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section)
    readme.write_text(text)


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short windows, small counts")
    ap.add_argument("--with-tansu", action="store_true",
                    help="install Tansu if missing (cargo install, 15-20 min) and run it")
    ap.add_argument("--no-tansu", action="store_true", help="skip Tansu even if installed")
    ap.add_argument("--no-1shard", action="store_true",
                    help="run Spate with its default shard count only (not also --shards 1)")
    ap.add_argument("--workloads", help="comma-separated workload names (default: all but smoke)")
    ap.add_argument("--no-build", action="store_true",
                    help="use target/release as it is (no cargo build --release)")
    ap.add_argument("--skip-raw", action="store_true", help="no dd/iperf3 runs")
    ap.add_argument("--no-rdkafka", action="store_true", help="no rdkafka_performance runs")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run every workload N times, brokers taking turns, and report each "
                         "figure's median (every run stays in the JSON)")
    ap.add_argument("--update-readme", action="store_true",
                    help="replace README.md's '## Benchmarks' section with this run's table")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--keep", action="store_true", help="keep the work dir (broker logs)")
    ap.add_argument("--render", metavar="JSON",
                    help="only re-render compare-<stamp>.md (and README with --update-readme) "
                         "from an existing compare-<stamp>.json")
    args = ap.parse_args()

    if args.render:
        src = Path(args.render).resolve()
        stamp = src.stem.removeprefix("compare-")
        results = json.loads(src.read_text())
        table, rawl, notes = write_results(results, src.parent, stamp)
        if args.update_readme:
            update_readme(results, stamp, table, rawl, notes)
        print("\n".join(table + [""] + rawl))
        return

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out).resolve()
    charts = out_dir / f"compare-{stamp}"
    charts.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compare-", dir=CACHE))  # same disk as the repo
    cmd = "bench/compare.sh" + "".join(f" {a}" for a in sys.argv[1:])
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": cmd, "commit": commit, "quick": args.quick, "repeat": args.repeat,
               "machine": machine(work),
               "units": "MB = MiB (1,048,576 bytes); latencies in ms", "brokers": {},
               "loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}
    log(f"work dir {work}; results to {out_dir}/compare-{stamp}.*")
    try:
        spate, bench = build_spate(not args.no_build)
        rdkp = None if args.no_rdkafka else rdkafka_performance()
        results["raw_runs"] = [] if args.skip_raw else [raw_limits(work, args.quick)]
        brokers = [("spate", spate)] + ([] if args.no_1shard else [("spate-1shard", spate)])
        if not args.no_tansu:
            t = find_tansu() or (install_tansu() if args.with_tansu else None)
            if t:
                brokers.append(("tansu", t))
            elif args.with_tansu:
                log("Tansu not available; running without it")
        workloads = workload_files(args.workloads, args.quick, work)
        n = 200_000 if args.quick else 1_000_000
        lat_secs = 5 if args.quick else 20
        runs = {kind: {"spate_bench": {w.stem: [] for w in workloads}, "rdkafka": []}
                for kind, _ in brokers}
        for kind, binary in brokers:
            r = {"binary": str(binary)}
            if kind == "tansu":
                r["version"] = sh([str(binary), "--version"]).strip()
                r["storage"] = "memory://tansu/ (not durable)"
            else:
                r["version"] = commit
                r["storage"] = "local segment files, acks=all fdatasync'd (group commit)"
            results["brokers"][kind] = r
        # Brokers take turns on each workload, so a noisy minute on the machine hits them alike
        # rather than one broker's whole series.
        for rep in range(args.repeat):
            if args.repeat > 1:
                log(f"round {rep + 1} of {args.repeat}")
            for w in workloads:
                for kind, binary in brokers:
                    try:
                        with Broker(kind, binary, work, w.stem) as b:
                            res = run_spate_bench(bench, b, w, charts)
                        if b.died is not None:
                            res["broker_died"] = b.died
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        res = {"error": str(e)[-500:]}
                        log(f"{kind}: {w.stem} failed: {str(e)[-300:]}")
                    runs[kind]["spate_bench"][w.stem].append(res)
            for kind, binary in brokers if rdkp else []:
                try:
                    with Broker(kind, binary, work, "rdkafka") as b:
                        res = run_rdkafka(rdkp, b, n, lat_secs)
                    if b.died is not None:
                        res["broker_died"] = b.died
                except Exception as e:  # noqa: BLE001 - keep the other figures
                    res = {"error": str(e)[-500:]}
                    log(f"{kind}: rdkafka_performance failed: {str(e)[-300:]}")
                runs[kind]["rdkafka"].append(res)
        for kind, _ in brokers:
            r = results["brokers"][kind]
            r["spate_bench"] = {w: median_of_runs(rs)
                                for w, rs in runs[kind]["spate_bench"].items()}
            if rdkp:
                r["rdkafka_performance"] = median_of_runs(runs[kind]["rdkafka"])
        if not args.skip_raw:  # again at the end: other load on the machine comes and goes
            results["raw_runs"].append(raw_limits(work, args.quick))
    finally:
        results["raw"] = best_raw(results.get("raw_runs", []))
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    table, rawl, notes = write_results(results, out_dir, stamp)
    if args.update_readme:
        update_readme(results, stamp, table, rawl, notes)
    print("\n".join(table + [""] + rawl))
    log(f"wrote {out_dir}/compare-{stamp}.json, .md and {len(list(charts.glob('*')))} files in "
        f"{charts}")


if __name__ == "__main__":
    main()
