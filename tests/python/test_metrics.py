"""The Prometheus endpoint: counters and histograms move by the right amounts over a
produce/consume round, and group lag follows commits."""

import re
import urllib.error
import urllib.request

from confluent_kafka import TopicPartition

from conftest import free_port
from kafkautil import consume, consumer, create_topic, producer, unique_topic, wait_until


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def total(text, name, **labels):
    """Sum of a metric's samples whose labels include `labels`."""
    out = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == str(v) for k, v in labels.items()):
            out += float(m.group(3))
    return out


def test_counters_and_histograms_move_over_a_round(broker_factory):
    mport = free_port()
    b = broker_factory(shards=2, extra_args=["--metrics-listen", f"127.0.0.1:{mport}",
                                             "--group-initial-rebalance-delay-ms", "0"])
    topic = unique_topic("metrics")
    create_topic(b.bootstrap, topic, 1)
    before = scrape(mport)
    n = 500
    p = producer(b.bootstrap)
    for i in range(n):
        p.produce(topic, value=b"x" * 100, key=str(i).encode())
    assert p.flush(15) == 0
    msgs = consume(b.bootstrap, [(topic, 0)], n, settle=0.2)
    assert len(msgs) == n
    after = scrape(mport)

    assert total(after, "spate_log_end_offset", topic=topic, partition=0) == n
    size = total(after, "spate_log_size_bytes", topic=topic, partition=0)
    assert size > n * 100
    # Every byte written came in by Produce, and went out at least once by Fetch.
    assert total(after, "spate_bytes_in_total") - total(before, "spate_bytes_in_total") == size
    out = lambda t: total(t, "spate_bytes_out_total")  # noqa: E731
    assert out(after) - out(before) >= size
    assert total(after, "spate_bytes_out_total", path="zero_copy") > 0
    produced = total(after, "spate_requests_total", api="Produce") - total(before, "spate_requests_total", api="Produce")
    assert produced >= 1
    hist = lambda t: total(t, "spate_request_duration_seconds_count", api="Produce")  # noqa: E731
    assert hist(after) - hist(before) == produced
    assert total(after, "spate_request_duration_seconds_bucket", api="Produce", le="+Inf") == hist(after)
    assert total(after, "spate_requests_total", api="Fetch") > total(before, "spate_requests_total", api="Fetch")
    assert total(after, "spate_flushes_total") > total(before, "spate_flushes_total"), "acks=all flushed"
    assert total(after, "spate_connections") >= 0

    # Group lag follows commits.
    group = "metrics-group"
    c = consumer(b.bootstrap, **{"group.id": group})
    try:
        for committed, lag in [(n, 0), (n - 10, 10)]:
            c.commit(offsets=[TopicPartition(topic, 0, committed)], asynchronous=False)
            wait_until(lambda: total(scrape(mport), "spate_consumer_group_lag", group=group, topic=topic, partition=0) == lag,
                       desc=f"lag {lag}")
            assert total(scrape(mport), "spate_consumer_group_committed_offset", group=group, topic=topic) == committed
    finally:
        c.close()


def test_executor_counters_only_grow_across_scrapes(broker_factory):
    """The executor's counters are totals: glommio hands out its stats since the last look, so
    each scrape once reported only what happened since the one before, and the "counters" went
    down between scrapes."""
    mport = free_port()
    b = broker_factory(shards=2, extra_args=["--metrics-listen", f"127.0.0.1:{mport}"])
    seen = {}
    for _ in range(20):
        text = scrape(mport)
        for shard in ("0", "1"):
            for name in ("spate_executor_tasks_total", "spate_executor_scheduler_runs_total",
                         "spate_executor_busy_seconds_total"):
                v = total(text, name, shard=shard)
                assert v >= seen.get((name, shard), 0), (name, shard, seen.get((name, shard)), v)
                seen[(name, shard)] = v
    assert all(v > 0 for (n, _), v in seen.items() if n == "spate_executor_tasks_total"), seen


def test_other_paths_are_not_found(broker_factory):
    mport = free_port()
    broker_factory(shards=1, extra_args=["--metrics-listen", f"127.0.0.1:{mport}"])
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{mport}/nope", timeout=10)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_grafana_dashboard_uses_only_exported_metrics(broker_factory):
    import json
    from pathlib import Path
    mport = free_port()
    b = broker_factory(shards=1, extra_args=["--metrics-listen", f"127.0.0.1:{mport}"])
    create_topic(b.bootstrap, unique_topic("dash"), 1)
    exported = {line.split()[2] for line in scrape(mport).splitlines() if line.startswith("# TYPE")}
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "tuning" / "grafana-dashboard.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(spate_\w+?)(?:_bucket|_count|_sum)?\b(?=[{\[(])", target["expr"]))
    assert used, "the dashboard queries no spate metric"
    missing = {m for m in used if m not in exported}
    assert not missing, f"dashboard metrics not exported: {missing}"
