"""DescribeLogDirs (API 35) through kafka-python's admin client, as consoles ask for disk use:
the broker's data dir, each partition replica's size on disk and offset lag, and the file
system's total and usable bytes."""

import os

from kafka.admin import KafkaAdminClient

from kafkautil import create_topic, flush_all, producer, unique_topic


def test_describe_log_dirs_reports_partition_sizes(broker):
    topic = unique_topic("dirs")
    create_topic(broker.bootstrap, topic, 2)
    p = producer(broker.bootstrap)
    for i in range(200):
        p.produce(topic, value=os.urandom(500), partition=0)
    flush_all(p)
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        res = a.describe_log_dirs()
        text = repr(res)
        assert str(broker.data_dir) in text, text[:2000]
        # Each answer: per broker, its log dirs with topics and partitions.
        sizes = {}

        def walk(x):
            if isinstance(x, dict):
                name = x.get("topic") or x.get("name")
                parts = x.get("partitions")
                if name == topic and isinstance(parts, list):
                    for q in parts:
                        idx = q.get("partition_index", q.get("partition"))
                        sizes[idx] = q.get("partition_size", q.get("size"))
                for v in x.values():
                    walk(v)
            elif isinstance(x, (list, tuple)):
                for v in x:
                    walk(v)
        walk(res)
        assert set(sizes) == {0, 1}, text[:2000]
        assert sizes[0] > 200 * 500 and sizes[1] == 0, sizes
        only = a.describe_log_dirs(topic_partitions={topic: [1]})
        assert topic in repr(only) and "'partition_index': 0" not in repr(only).split(topic, 1)[1][:300]
    finally:
        a.close()
