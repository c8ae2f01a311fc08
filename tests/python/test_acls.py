"""ACL authorization (`--authorizer acl`): ACLs created, listed and deleted with confluent-kafka's
AdminClient (CreateAcls/DescribeAcls/DeleteAcls) and `spate acl`, enforced on SCRAM users of a
SASL_PLAINTEXT listener by real clients: a prefixed Write lets a producer write `orders-eu` but
not `payments`; a consumer without Read on its group is refused; Metadata hides what a user may
not describe; a deny beats an allow; a new ACL reaches an open connection within a second;
super users pass; a default-idempotent producer needs only Write on its topic (KIP-679); the
ACL APIs answer SECURITY_DISABLED without an authorizer; ACLs survive a restart."""

import subprocess
import time

import pytest

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType)

from conftest import free_port
from kafkautil import DeliveryLog, flush_all, unique_topic, wait_until

USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret",
         "carol": "carol-secret"}


def acl_broker(broker_factory, tmp_path, super_users="User:admin", extra=()):
    users = tmp_path / "users"
    users.write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()))
    plain, sasl = free_port(), free_port()
    b = broker_factory(shards=2, port=plain, extra_args=[
        "--listeners", f"PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}",
        "--sasl-users-file", str(users), "--authorizer", "acl", "--super-users", super_users,
        *extra])
    b.sasl_bootstrap = f"127.0.0.1:{sasl}"
    wait_until(lambda: "SCRAM users created" in b.log_text(), timeout=20,
               desc="the users of --sasl-users-file created")
    return b


def conf(b, user, **extra):
    return {"bootstrap.servers": b.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
            "sasl.password": USERS[user], **extra}


def admin(b, user="admin"):
    return AdminClient(conf(b, user))


def create_topics(b, *names):
    a = admin(b)
    for f in a.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        f.result(15)


def python_admin(bootstrap, **extra):
    from kafka.admin import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, **extra)


def any_acl_filter():
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePatternFilter)
    from kafka.admin import ResourceType as KResourceType
    return ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                     permission_type=ACLPermissionType.ANY,
                     resource_pattern=ResourcePatternFilter(KResourceType.ANY, None,
                                                            ACLResourcePatternType.ANY))


def acl(name, principal, op, perm=AclPermissionType.ALLOW, rtype=ResourceType.TOPIC,
        pattern=ResourcePatternType.LITERAL, host="*"):
    return AclBinding(rtype, name, pattern, principal, host, op, perm)


def create_acls(b, *bindings, user="admin"):
    a = admin(b, user)
    for f in a.create_acls(list(bindings)).values():
        f.result(15)


def describe_all(b):
    a = admin(b)
    return a.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(15)


def produce_one(b, user, topic, **extra):
    """Produces one record as `user`: None when delivered, else the delivery error code."""
    p = Producer(conf(b, user, **{"message.timeout.ms": 8000, **extra}))
    dl = DeliveryLog()
    p.produce(topic, value=b"v", on_delivery=dl)
    p.flush(20)
    assert dl.ok or dl.errors, "no delivery report"
    return dl.errors[0][0].code() if dl.errors else None


def test_prefixed_write_and_deny_beats_allow(broker_factory, tmp_path):
    b = acl_broker(broker_factory, tmp_path)
    create_topics(b, "orders-eu", "orders-secret", "payments")
    create_acls(b, acl("orders-", "User:alice", AclOperation.WRITE,
                       pattern=ResourcePatternType.PREFIXED),
                acl("orders-secret", "User:alice", AclOperation.WRITE,
                    perm=AclPermissionType.DENY))
    # A default-idempotent producer: InitProducerId passes with Write on a topic (KIP-679).
    assert produce_one(b, "alice", "orders-eu", **{"enable.idempotence": True}) is None
    assert produce_one(b, "alice", "orders-eu") is None
    assert produce_one(b, "alice", "payments") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The literal deny wins over the prefixed allow.
    assert produce_one(b, "alice", "orders-secret") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Without any Write ACL an idempotent producer cannot even get a producer id.
    assert produce_one(b, "bob", "orders-eu", **{"enable.idempotence": True}) is not None
    # The super user is not asked for ACLs.
    assert produce_one(b, "admin", "payments") is None
    # Authorized operations, when asked for: what the ACLs give (Write implies Describe).
    from confluent_kafka import TopicCollection
    a = admin(b, "alice")
    d = a.describe_topics(TopicCollection(["orders-eu"]),
                          include_authorized_operations=True)["orders-eu"].result(15)
    assert sorted(op.name for op in d.authorized_operations) == ["DESCRIBE", "WRITE"]
    su = admin(b)
    cl = su.describe_cluster(include_authorized_operations=True).result(15)
    assert {op.name for op in cl.authorized_operations} >= {"ALTER", "CLUSTER_ACTION",
                                                            "IDEMPOTENT_WRITE"}


def test_consumer_needs_read_on_its_group_and_new_acls_apply_at_once(broker_factory, tmp_path):
    b = acl_broker(broker_factory, tmp_path)
    topic = unique_topic("acl-consume")
    create_topics(b, topic)
    assert produce_one(b, "admin", topic) is None
    create_acls(b, acl(topic, "User:bob", AclOperation.READ))
    errors = []
    c = Consumer(conf(b, "bob", **{"group.id": "bob-group", "auto.offset.reset": "earliest",
                                   "enable.auto.commit": False, "error_cb": errors.append}))
    c.subscribe([topic])
    seen = []

    def group_refused():
        m = c.poll(0.2)
        if m is not None and m.error() is not None:
            seen.append(m.error().code())
        return KafkaError.GROUP_AUTHORIZATION_FAILED in seen + [e.code() for e in errors]

    wait_until(group_refused, timeout=30, desc="GROUP_AUTHORIZATION_FAILED for bob's group")
    # Read on the group: the same consumer (its connections open) now gets its record.
    create_acls(b, acl("bob-group", "User:bob", AclOperation.READ, rtype=ResourceType.GROUP))
    got = []

    def consumed():
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
        return got

    wait_until(consumed, timeout=30, desc="bob's record once the group ACL exists")
    c.close()


def test_metadata_hides_what_may_not_be_described(broker_factory, tmp_path):
    b = acl_broker(broker_factory, tmp_path)
    visible, hidden = unique_topic("visible"), unique_topic("hidden")
    create_topics(b, visible, hidden)
    create_acls(b, acl(visible, "User:carol", AclOperation.DESCRIBE))
    a = admin(b, "carol")
    md = a.list_topics(timeout=10)
    assert visible in md.topics and hidden not in md.topics, sorted(md.topics)
    # Named: refused whether it exists or not, so existence is not given away.
    for name in (hidden, unique_topic("ghost")):
        t = a.list_topics(topic=name, timeout=10).topics[name]
        assert t.error is not None and t.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert a.list_topics(topic=visible, timeout=10).topics[visible].error is None
    # The ACL APIs need their own cluster ACLs: carol may not read or change ACLs.
    # (confluent-kafka's describe_acls drops DescribeAcls' error code; kafka-python raises it.)
    from kafka.errors import ClusterAuthorizationFailedError
    kp = python_admin(b.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="carol",
                      sasl_plain_password=USERS["carol"])
    with pytest.raises(ClusterAuthorizationFailedError):
        kp.describe_acls(any_acl_filter())
    kp.close()
    for f in a.create_acls([acl(visible, "User:carol", AclOperation.WRITE)]).values():
        with pytest.raises(KafkaException) as e:
            f.result(15)
        assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def test_a_new_acl_reaches_an_open_connection_within_a_second(broker_factory, tmp_path):
    b = acl_broker(broker_factory, tmp_path)
    topic = unique_topic("late")
    create_topics(b, topic)
    a = admin(b, "carol")
    t = a.list_topics(topic=topic, timeout=10).topics[topic]
    assert t.error is not None and t.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    create_acls(b, acl(topic, "User:carol", AclOperation.DESCRIBE))
    start = time.monotonic()
    wait_until(lambda: a.list_topics(topic=topic, timeout=5).topics[topic].error is None,
               timeout=1.0, desc="the new ACL on carol's open connection")
    assert time.monotonic() - start <= 1.0
    # Deleted again: refused again.
    a_admin = admin(b)
    res = a_admin.delete_acls([AclBindingFilter(
        ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:carol", None,
        AclOperation.ANY, AclPermissionType.ANY)])
    deleted = list(res.values())[0].result(15)
    assert len(deleted) == 1 and deleted[0].name == topic
    wait_until(lambda: a.list_topics(topic=topic, timeout=5).topics[topic].error is not None,
               timeout=1.0, desc="the deleted ACL gone on carol's connection")


def test_acl_apis_validate_and_survive_a_restart(broker_factory, tmp_path):
    b = acl_broker(broker_factory, tmp_path)
    create_acls(b, acl("orders-", "User:alice", AclOperation.WRITE,
                       pattern=ResourcePatternType.PREFIXED),
                acl("g", "User:bob", AclOperation.READ, rtype=ResourceType.GROUP))
    # Creating the same ACL again changes nothing.
    create_acls(b, acl("g", "User:bob", AclOperation.READ, rtype=ResourceType.GROUP))
    assert len(describe_all(b)) == 2
    # A cluster ACL must name kafka-cluster: INVALID_REQUEST.
    try:
        create_acls(b, acl("other", "User:bob", AclOperation.ALTER, rtype=ResourceType.BROKER))
        raise AssertionError("an invalid cluster ACL was accepted")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.INVALID_REQUEST
    b.restart()
    wait_until(lambda: len(describe_all(b)) == 2, timeout=20, desc="the ACLs after a restart")
    create_topics(b, "orders-x")
    assert produce_one(b, "alice", "orders-x") is None
    assert produce_one(b, "bob", "orders-x") == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_acl_apis_are_security_disabled_without_an_authorizer(broker):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in a.create_acls([acl("t", "User:alice", AclOperation.READ)]).values():
        try:
            f.result(15)
            raise AssertionError("CreateAcls succeeded without an authorizer")
        except KafkaException as e:
            assert e.args[0].code() == KafkaError.SECURITY_DISABLED
    from kafka.errors import SecurityDisabledError
    kp = python_admin(broker.bootstrap)
    with pytest.raises(SecurityDisabledError):
        kp.describe_acls(any_acl_filter())
    kp.close()


def test_spate_acl_cli_round_trip(broker_factory, tmp_path):
    # The CLI speaks PLAINTEXT (User:ANONYMOUS), made a super user here.
    b = acl_broker(broker_factory, tmp_path, super_users="User:admin;User:ANONYMOUS")

    def cli(*args):
        r = subprocess.run([str(b.binary), "acl", *args, "--bootstrap-server", b.bootstrap],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = cli("add", "--allow-principal", "User:alice", "--operation", "Write",
              "--operation", "Describe", "--topic", "cli-", "--resource-pattern-type",
              "prefixed")
    assert "Added 2 ACL(s)" in out, out
    out = cli("list", "--topic", "cli-x", "--resource-pattern-type", "match")
    assert "User:alice" in out and "PREFIXED" in out and "Write" in out, out
    create_topics(b, "cli-x")
    assert produce_one(b, "alice", "cli-x") is None
    out = cli("remove", "--topic", "cli-", "--resource-pattern-type", "prefixed",
              "--operation", "Write")
    assert "Removed 1 ACL(s)" in out, out
    out = cli("list", "--json")
    assert "Write" not in out and "Describe" in out, out
    wait_until(lambda: produce_one(b, "alice", "cli-x") == KafkaError.TOPIC_AUTHORIZATION_FAILED,
               timeout=20, desc="alice refused once her Write ACL is removed")


def test_cluster_acls_reach_every_broker_and_replication_keeps_working(spate_bin, tmp_path):
    """Three brokers under --authorizer acl. No ACL names the cluster yet and
    --allow-everyone-if-no-acl-found is on, so the followers' replica Fetch (User:ANONYMOUS on
    the PLAINTEXT listener, as a broker's principal would be a super user) passes ClusterAction:
    an RF=3 topic takes acks=all writes. A DENY created through broker 1 is enforced by
    brokers 2 and 3 within a second."""
    from test_cluster import FAST, Cluster
    c = Cluster(spate_bin, tmp_path / "c", n=3,
                extra_args=[*FAST, "--authorizer", "acl", "--allow-everyone-if-no-acl-found"])
    try:
        c.start()
        a1 = AdminClient({"bootstrap.servers": c.nodes[1].bootstrap})
        replicated = unique_topic("acl-rf3")
        for f in a1.create_topics([NewTopic(replicated, 1, 3)]).values():
            f.result(20)
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all",
                      "message.timeout.ms": 20000})
        dl = DeliveryLog()
        p.produce(replicated, value=b"replicated", on_delivery=dl)
        flush_all(p)
        assert dl.ok and not dl.errors, dl.errors
        hidden = unique_topic("acl-hidden")
        for f in a1.create_topics([NewTopic(hidden, 1, 1)]).values():
            f.result(20)
        others = {i: AdminClient({"bootstrap.servers": c.nodes[i].bootstrap}) for i in (2, 3)}
        for a in others.values():
            wait_until(lambda a=a: a.list_topics(topic=hidden, timeout=5).topics[hidden].error
                       is None, timeout=20, desc="the topic on every broker")
        for f in a1.create_acls([acl(hidden, "User:ANONYMOUS", AclOperation.DESCRIBE,
                                     perm=AclPermissionType.DENY)]).values():
            f.result(20)
        start = time.monotonic()
        for a in others.values():
            wait_until(lambda a=a: (a.list_topics(topic=hidden, timeout=5).topics[hidden].error
                                    or KafkaError(0)).code()
                       == KafkaError.TOPIC_AUTHORIZATION_FAILED,
                       timeout=1.0, desc="the DENY enforced by another broker")
        assert time.monotonic() - start <= 1.0
    finally:
        c.kill_all()


def test_cluster_with_the_brokers_principal_as_super_user(spate_bin, tmp_path):
    """Three brokers under --authorizer acl, nothing open by default, the brokers' principal
    (User:ANONYMOUS on the PLAINTEXT listener they reach each other on) in --super-users, as
    Kafka wants it: followers replicate an RF=3 topic (acks=all), and an ACL created through
    broker 1 is in broker 2's and 3's tables (what they authorize with) within a second."""
    from test_cluster import FAST, Cluster
    c = Cluster(spate_bin, tmp_path / "c", n=3,
                extra_args=[*FAST, "--authorizer", "acl", "--super-users", "User:ANONYMOUS"])
    try:
        c.start()
        a1 = AdminClient({"bootstrap.servers": c.nodes[1].bootstrap})
        topic = unique_topic("acl-su-rf3")
        for f in a1.create_topics([NewTopic(topic, 1, 3)]).values():
            f.result(20)
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all",
                      "message.timeout.ms": 20000})
        dl = DeliveryLog()
        for i in range(10):
            p.produce(topic, value=b"%d" % i, on_delivery=dl)
        flush_all(p)
        assert len(dl.ok) == 10 and not dl.errors, dl.errors
        md = a1.list_topics(topic=topic, timeout=10).topics[topic].partitions[0]
        wait_until(lambda: sorted(a1.list_topics(topic=topic, timeout=5).topics[topic]
                                  .partitions[0].isrs) == [1, 2, 3],
                   timeout=20, desc=f"every replica in sync (was {md.isrs})")
        for f in a1.create_acls([acl(topic, "User:alice", AclOperation.READ)]).values():
            f.result(20)
        start = time.monotonic()
        flt = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, None,
                               None, AclOperation.ANY, AclPermissionType.ANY)
        for i in (2, 3):
            a = AdminClient({"bootstrap.servers": c.nodes[i].bootstrap})
            wait_until(lambda a=a: len(a.describe_acls(flt).result(5)) == 1, timeout=1.0,
                       desc=f"the ACL on broker {i}")
        assert time.monotonic() - start <= 1.0
    finally:
        c.kill_all()


def test_admin_and_transactional_apis_need_their_acls(broker_factory, tmp_path):
    b = acl_broker(broker_factory, tmp_path)
    topic = unique_topic("acl-admin")
    create_topics(b, topic)
    a = admin(b, "carol")

    def code(f):
        with pytest.raises(KafkaException) as e:
            f.result(15)
        return e.value.args[0].code()

    new = unique_topic("acl-new")
    assert code(a.create_topics([NewTopic(new, 1, 1)])[new]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert code(a.delete_topics([topic])[topic]) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    from confluent_kafka.admin import ConfigResource
    for res, want in ((ConfigResource("topic", topic), KafkaError.TOPIC_AUTHORIZATION_FAILED),
                      (ConfigResource("broker", "0"), KafkaError.CLUSTER_AUTHORIZATION_FAILED)):
        assert code(a.describe_configs([res])[res]) == want
    # A transactional producer needs Write on its transactional id.
    tx = Producer(conf(b, "carol", **{"transactional.id": "tx-carol"}))
    with pytest.raises(KafkaException) as e:
        tx.init_transactions(15)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # With Write on it (and on the topic) the transaction commits.
    create_acls(b, acl("tx-carol", "User:carol", AclOperation.WRITE,
                       rtype=ResourceType.TRANSACTIONAL_ID),
                acl(topic, "User:carol", AclOperation.WRITE))
    tx = Producer(conf(b, "carol", **{"transactional.id": "tx-carol"}))
    tx.init_transactions(30)
    tx.begin_transaction()
    tx.produce(topic, value=b"in-a-transaction")
    tx.commit_transaction(30)
    # Create on the cluster lets carol create topics.
    create_acls(b, acl("kafka-cluster", "User:carol", AclOperation.CREATE,
                       rtype=ResourceType.BROKER))
    a.create_topics([NewTopic(new, 1, 1)])[new].result(15)
