"""kafkajs, the Node.js client, as an application uses it: admin (CreateTopics with Kafka 4
topic configs, Metadata, AlterConfigs, DescribeConfigs of a topic and of the broker, ListOffsets
by time, DeleteRecords, CreatePartitions, DescribeCluster, ListGroups, DeleteTopics), a
producer (uncompressed batches into a gzip topic, which kafkajs reads back: it has no zstd
of its own; a record an hour and more in the future refused)
and a consumer group. scripts/bootstrap.sh installs Node.js and tests/js's packages."""

import json
import struct
import subprocess
from pathlib import Path

from kafkautil import unique_topic

JS = Path(__file__).resolve().parent.parent / "js"


def test_kafkajs_admin_producer_and_consumer(broker):
    topic = unique_topic("kafkajs")
    r = subprocess.run(["node", str(JS / "admin.js"), broker.bootstrap, topic],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["created"] is True and out["partitions"] == 2, out
    assert out["configs"]["compression.type"] == "gzip", out["configs"]
    assert out["configs"]["retention.ms"] == "3600000", out["configs"]
    assert out["configs"]["segment.index.bytes"] == "10485760", out["configs"]
    assert out["broker"]["log.retention.ms"] == "604800000", out["broker"]
    assert out["future"] == "INVALID_TIMESTAMP", out
    offsets = {o["partition"]: o for o in out["offsets"]}
    assert offsets[0]["high"] == "10" and offsets[1]["high"] == "0", offsets
    assert {o["partition"]: o["offset"] for o in out["byTimestamp"]}[0] == "5", out["byTimestamp"]
    after = {o["partition"]: o for o in out["afterDelete"]}
    assert after[0]["low"] == "2", after
    assert out["partitionsAfter"] == 3 and out["brokers"] == [0], out
    assert sorted(out["consumed"]) == [[0, i, f"v{i}"] for i in range(2, 10)], out["consumed"]
    assert len(out["groups"]) == 1, out["groups"]
