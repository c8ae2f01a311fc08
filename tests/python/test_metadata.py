"""The metadata store, black-box: after kill -9 the catalog is exactly what was acknowledged
(creations, config changes, deletions, a re-creation under an old name), and a data dir of an
older version, with its `catalog.json`, is migrated once with every topic's id, partition count,
configs and data."""

import json
import subprocess

from kafkautil import DeliveryLog, admin, by_partition, consume, create_topic, flush_all, list_topics, producer, \
    unique_topic

RUN_TIMEOUT_S = 60
ADMIN_TIMEOUT = 15


def spate_json(spate_bin, broker, *args):
    r = subprocess.run([str(spate_bin), *args, "--json", "--bootstrap-server", broker.bootstrap],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert r.returncode == 0, f"spate {args} failed:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def catalog(spate_bin, broker):
    """{topic: (id, partitions, {config set on the topic: value})} of every topic, through the wire."""
    names = sorted(list_topics(admin(broker.bootstrap)))
    if not names:
        return {}
    out = {}
    for t in spate_json(spate_bin, broker, "topic", "describe", *names):
        configs = {c["name"]: c["value"] for c in t["configs"] if c["source"] == "topic"}
        out[t["name"]] = (t["id"], len(t["partitions"]), configs)
    return out


def alter(bootstrap, topic, set_configs=None, delete=()):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in (set_configs or {}).items()]
    entries += [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in delete]
    a = admin(bootstrap)  # kept alive until the futures are done
    fs = a.incremental_alter_configs(
        [ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)], request_timeout=ADMIN_TIMEOUT)
    for f in fs.values():
        f.result(timeout=ADMIN_TIMEOUT)


def delete_topic(bootstrap, topic):
    a = admin(bootstrap)  # kept alive until the futures are done
    fs = a.delete_topics([topic], operation_timeout=ADMIN_TIMEOUT, request_timeout=ADMIN_TIMEOUT)
    fs[topic].result(timeout=ADMIN_TIMEOUT)


def produce(bootstrap, records):
    dl = DeliveryLog()
    p = producer(bootstrap)
    for topic, part, value in records:
        p.produce(topic, value=value, partition=part, on_delivery=dl)
        p.poll(0)
    flush_all(p)
    assert not dl.errors, dl.errors[:5]


def test_catalog_after_kill_9_is_what_was_acknowledged(spate_bin, broker_factory):
    broker = broker_factory(shards=2)
    a, b, c, d = (unique_topic(x) for x in ("md-a", "md-b", "md-c", "md-d"))
    create_topic(broker.bootstrap, a, 3, {"retention.ms": "600000", "segment.bytes": "1048576"})
    create_topic(broker.bootstrap, b, 1)
    create_topic(broker.bootstrap, c, 2, {"flush.messages": "10"})
    create_topic(broker.bootstrap, d, 4)
    alter(broker.bootstrap, a, {"retention.bytes": "5000000"}, delete=["segment.bytes"])
    alter(broker.bootstrap, b, {"message.timestamp.type": "LogAppendTime"})
    delete_topic(broker.bootstrap, c)
    old_d = catalog(spate_bin, broker)[d][0]
    delete_topic(broker.bootstrap, d)
    # A new topic under an old name: a new id, and nothing of the old one (configs, data).
    create_topic(broker.bootstrap, d, 2)
    produce(broker.bootstrap, [(a, 1, b"a1"), (d, 0, b"d0")])

    acknowledged = catalog(spate_bin, broker)
    assert set(acknowledged) == {a, b, d}, acknowledged
    assert acknowledged[a][1:] == (3, {"retention.ms": "600000", "retention.bytes": "5000000"}), acknowledged
    assert acknowledged[b][1:] == (1, {"message.timestamp.type": "LogAppendTime"}), acknowledged
    assert acknowledged[d][1:] == (2, {}) and acknowledged[d][0] != old_d, acknowledged

    broker.kill()
    broker.start()
    assert catalog(spate_bin, broker) == acknowledged
    got = by_partition(consume(broker.bootstrap, [(a, 1), (d, 0), (d, 1)], 2))
    assert [m.value() for m in got.get((a, 1), [])] == [b"a1"]
    assert [m.value() for m in got.get((d, 0), [])] == [b"d0"]

    # Changes after the restart append to the replayed log, and survive another kill.
    delete_topic(broker.bootstrap, b)
    alter(broker.bootstrap, d, {"retention.ms": "1000000"})
    expected = catalog(spate_bin, broker)
    assert set(expected) == {a, d} and expected[d][2] == {"retention.ms": "1000000"}, expected
    broker.kill()
    broker.start()
    assert catalog(spate_bin, broker) == expected


def test_catalog_json_of_an_older_version_is_migrated(spate_bin, broker_factory):
    broker = broker_factory(shards=2)
    topics = {unique_topic("mig-a"): (3, {"retention.ms": "600000", "message.timestamp.type": "LogAppendTime"}),
              unique_topic("mig-b"): (1, {}),
              unique_topic("mig-empty"): (2, {"segment.bytes": "1048576"})}
    for t, (n, cfg) in topics.items():
        create_topic(broker.bootstrap, t, n, cfg)
    (a, b, _) = topics
    records = [(a, p, f"{a}/{p}/{i}".encode()) for i in range(5) for p in range(3)] + \
              [(b, 0, f"{b}/{i}".encode()) for i in range(7)]
    produce(broker.bootstrap, records)
    before = catalog(spate_bin, broker)
    broker.stop()

    # Turn the data dir into an older version's: its catalog.json, written as that version did
    # (serde_json, pretty), and no metadata log. The partition directories stay as they are.
    data = broker.data_dir
    subprocess.run(["rm", "-rf", str(data / "__cluster_metadata-0"), str(data / "meta.properties")], check=True)
    legacy = {
        "cluster_id": "legacycluster0000000000000000001",
        "topics": [{"name": t, "topic_id": before[t][0], "partitions": n, "configs": cfg}
                   for t, (n, cfg) in topics.items()],
    }
    (data / "catalog.json").write_text(json.dumps(legacy, indent=2))

    broker.start()
    assert "migrated catalog.json into the metadata log" in broker.log_text()
    assert not (data / "catalog.json").exists()
    assert json.loads((data / "catalog.json.migrated").read_text()) == legacy
    assert catalog(spate_bin, broker) == before
    md = admin(broker.bootstrap).list_topics(timeout=ADMIN_TIMEOUT)
    assert md.cluster_id == legacy["cluster_id"]
    layout = [(a, p) for p in range(3)] + [(b, 0)]
    got = by_partition(consume(broker.bootstrap, layout, len(records)))
    for tp in layout:
        assert [m.value() for m in got.get(tp, [])] == [v for t, p, v in records if (t, p) == tp], tp

    # Migration happens once: a crash and a restart read the metadata log, not the old file.
    broker.kill()
    broker.start()
    assert "migrated catalog.json" not in broker.log_text()
    assert catalog(spate_bin, broker) == before
    assert admin(broker.bootstrap).list_topics(timeout=ADMIN_TIMEOUT).cluster_id == legacy["cluster_id"]


def test_a_failed_metadata_write_is_an_error_and_refuses_changes_until_restart(spate_bin, broker_factory,
                                                                                monkeypatch):
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic
    from kafkautil import error_code

    before = unique_topic("mdf-before")
    monkeypatch.setenv("SPATE_TEST_FAULTS", "write:EIO:__cluster_metadata-0/:1")
    broker = broker_factory(shards=2)

    def create(name):
        a = admin(broker.bootstrap)
        fs = a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                             request_timeout=ADMIN_TIMEOUT, operation_timeout=ADMIN_TIMEOUT)
        try:
            fs[name].result(timeout=ADMIN_TIMEOUT)
            return None
        except KafkaException as e:
            return error_code(e)

    assert create(before) == KafkaError.KAFKA_STORAGE_ERROR
    assert "metadata log write failed" in broker.log_text(), broker.log_tail()
    # After a failed write the file's state is unknown: no more changes until a restart...
    assert create(unique_topic("mdf-refused")) == KafkaError.KAFKA_STORAGE_ERROR
    assert before not in list_topics(admin(broker.bootstrap))
    monkeypatch.delenv("SPATE_TEST_FAULTS")
    broker.kill()
    broker.start()
    # ...which finds nothing of the failed change and takes changes again.
    assert before not in list_topics(admin(broker.bootstrap))
    assert create(before) is None
    broker.kill()
    broker.start()
    assert list(catalog(spate_bin, broker)) == [before]
