"""SCRAM credentials as cluster metadata, managed the way the admin clients manage them
(DescribeUserScramCredentials / AlterUserScramCredentials, KIP-554): set from a salted
password (the client salts and hashes; the password never reaches the broker), described by
mechanism and iterations only, removed, checked as Kafka checks them, and kept across a
restart."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

from kafkautil import admin


def alter(a, alterations):
    """{user: None or the KafkaError code}"""
    out = {}
    for user, f in a.alter_user_scram_credentials(alterations, request_timeout=15).items():
        try:
            f.result(timeout=15)
            out[user] = None
        except KafkaException as e:
            out[user] = e.args[0].code()
    return out


def describe(a, users=None):
    """{user: {mechanism name: iterations}} (unknown users: their error code)."""
    out = {}
    fut = a.describe_user_scram_credentials(users, request_timeout=15)
    items = fut.result(timeout=15).items() if users is None else fut.items()
    for user, d in items:
        try:
            d = d if users is None else d.result(timeout=15)
            out[user] = {c.mechanism.name: c.iterations for c in d.scram_credential_infos}
        except KafkaException as e:
            out[user] = e.args[0].code()
    return out


def test_credentials_are_set_described_removed_and_kept(broker):
    a = admin(broker.bootstrap)
    sha256 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    sha512 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    got = alter(a, [UserScramCredentialUpsertion("alice", sha256, b"alice-secret"),
                    UserScramCredentialUpsertion("alice", sha512, b"alice-secret"),
                    UserScramCredentialUpsertion("bob", sha512, b"bob-secret", b"fixed-salt")])
    assert got == {"alice": None, "bob": None}, got
    assert describe(a) == {"alice": {"SCRAM_SHA_256": 4096, "SCRAM_SHA_512": 8192},
                           "bob": {"SCRAM_SHA_512": 8192}}
    # Kafka's checks: iterations 4096..16384, a user named once per mechanism, a removal of
    # what exists.
    got = alter(a, [UserScramCredentialUpsertion("carol", ScramCredentialInfo(
        ScramMechanism.SCRAM_SHA_256, 100), b"pw")])
    assert got == {"carol": KafkaError.UNACCEPTABLE_CREDENTIAL}, got
    got = alter(a, [UserScramCredentialUpsertion("carol", ScramCredentialInfo(
        ScramMechanism.SCRAM_SHA_256, 20000), b"pw")])
    assert got == {"carol": KafkaError.UNACCEPTABLE_CREDENTIAL}, got
    got = alter(a, [UserScramCredentialUpsertion("dave", sha256, b"pw"),
                    UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_256)])
    assert got == {"dave": KafkaError.DUPLICATE_RESOURCE}, got
    got = alter(a, [UserScramCredentialDeletion("erin", ScramMechanism.SCRAM_SHA_256)])
    assert got == {"erin": KafkaError.RESOURCE_NOT_FOUND}, got
    assert describe(a, ["alice", "nobody"]) == {
        "alice": {"SCRAM_SHA_256": 4096, "SCRAM_SHA_512": 8192},
        "nobody": KafkaError.RESOURCE_NOT_FOUND}
    got = alter(a, [UserScramCredentialDeletion("alice", ScramMechanism.SCRAM_SHA_256)])
    assert got == {"alice": None}
    broker.restart()
    a = admin(broker.bootstrap)
    assert describe(a) == {"alice": {"SCRAM_SHA_512": 8192}, "bob": {"SCRAM_SHA_512": 8192}}


def test_spate_user_cli(broker):
    import subprocess

    def spate(*args, stdin=""):
        return subprocess.run([str(broker.binary), "user", *args, "--bootstrap-server",
                               broker.bootstrap], input=stdin, capture_output=True, text=True,
                              timeout=60)
    r = spate("set", "carol", "--password", "-", stdin="carol-pw\n")
    assert r.returncode == 0, r.stderr
    r = spate("set", "dan", "--password", "x", "--mechanism", "SCRAM-SHA-512", "--iterations", "8192")
    assert r.returncode == 0, r.stderr
    out = spate("list").stdout
    assert "carol" in out and "SCRAM-SHA-256" in out and "8192" in out, out
    assert describe(admin(broker.bootstrap)) == {
        "carol": {"SCRAM_SHA_256": 4096, "SCRAM_SHA_512": 4096}, "dan": {"SCRAM_SHA_512": 8192}}
    r = spate("set", "erin", "--password", "x", "--iterations", "100")
    assert r.returncode != 0 and "UNACCEPTABLE_CREDENTIAL" in r.stderr, r.stderr
    assert spate("delete", "carol").returncode == 0
    assert "carol" not in spate("list").stdout


def test_users_file_is_read_on_the_first_start_only(broker_factory, tmp_path):
    from kafkautil import wait_until
    users = tmp_path / "users"
    users.write_text("# first users\nadmin:admin-secret\n\nalice:pa:ss\n")
    b = broker_factory(shards=1, extra_args=["--sasl-users-file", str(users)])
    want = {"SCRAM_SHA_256": 4096, "SCRAM_SHA_512": 4096}
    wait_until(lambda: describe(admin(b.bootstrap)) == {"admin": want, "alice": want},
               timeout=20, desc="the users of the file created")
    assert "admin-secret" not in b.log_text() and "pa:ss" not in b.log_text()
    # A later start with another file keeps the credentials and says the file is ignored.
    users.write_text("mallory:x\n")
    b.restart()
    wait_until(lambda: "--sasl-users-file ignored" in b.log_text(), timeout=20,
               desc="the WARN that the file is ignored")
    assert describe(admin(b.bootstrap)) == {"admin": want, "alice": want}


def test_a_bad_users_file_stops_the_start(spate_bin, tmp_path):
    import subprocess
    bad = tmp_path / "users"
    bad.write_text("alice:secret\nbob\n")
    r = subprocess.run([str(spate_bin), "serve", "--data-dir", str(tmp_path / "d"),
                        "--sasl-users-file", str(bad), "--print-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "line 2" in r.stderr and "secret" not in r.stderr, r.stderr
