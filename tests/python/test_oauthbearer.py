"""SASL/OAUTHBEARER: confluent-kafka and kafka-python log in with a JWT signed by a key of the
broker's JWKS file (made here with `cryptography`, signed with PyJWT), then produce and consume
as `User:<sub>`. A token signed by another key, an expired one, one for another audience or
issuer, and an HMAC-signed one are refused, and the broker keeps serving others."""

import json
import time

import jwt
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import free_port
from kafkautil import DeliveryLog, flush_all, unique_topic, wait_until

ISSUER = "https://idp.example"
AUDIENCE = "spate"


def jwk_of(private_key, kid, alg):
    algo = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    d = algo.to_jwk(private_key.public_key(), as_dict=True)
    d.update({"kid": kid, "alg": alg, "use": "sig"})
    return d


@pytest.fixture
def keys():
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "stranger": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


def oauth_broker(broker_factory, tmp_path, keys):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(keys["rsa"], "rsa-1", "RS256"),
                                         jwk_of(keys["ec"], "ec-1", "ES256")]}))
    plain, sasl = free_port(), free_port()
    b = broker_factory(shards=2, port=plain, extra_args=[
        "--listeners", f"PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}",
        "--sasl-enabled-mechanisms", "OAUTHBEARER,SCRAM-SHA-512",
        "--sasl-oauthbearer-jwks-endpoint-url", f"file://{jwks}",
        "--sasl-oauthbearer-expected-audience", AUDIENCE,
        "--sasl-oauthbearer-expected-issuer", ISSUER])
    b.sasl_bootstrap = f"127.0.0.1:{sasl}"
    return b


def token(key, kid, alg, sub="alice", exp_in=600, aud=AUDIENCE, iss=ISSUER):
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + exp_in, "aud": aud, "iss": iss},
                      key, algorithm=alg, headers={"kid": kid})


def conf(b, make_token, errors=None, **extra):
    def oauth_cb(_config):
        t = make_token()
        return t, time.time() + 600
    c = {"bootstrap.servers": b.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
         "sasl.mechanism": "OAUTHBEARER", "oauth_cb": oauth_cb, **extra}
    if errors is not None:
        c["error_cb"] = errors.append
    return c


def logs_in(b, make_token):
    errors = []
    a = AdminClient(conf(b, make_token, errors, **{"socket.timeout.ms": 3000}))
    try:
        a.list_topics(timeout=4)
        return True, errors
    except Exception:
        # The client reports the refusal through error_cb, served by poll.
        deadline = time.monotonic() + 10
        while not errors and time.monotonic() < deadline:
            a.poll(0.2)
        return False, errors


def test_clients_log_in_with_a_jwt_and_produce_and_consume(broker_factory, tmp_path, keys):
    b = oauth_broker(broker_factory, tmp_path, keys)
    topic = unique_topic("oauth")
    rs = lambda: token(keys["rsa"], "rsa-1", "RS256", sub="alice")  # noqa: E731
    es = lambda: token(keys["ec"], "ec-1", "ES256", sub="bob")  # noqa: E731
    p = Producer(conf(b, rs, **{"linger.ms": 5}))
    dl = DeliveryLog()
    for i in range(40):
        p.produce(topic, value=f"m{i}".encode(), on_delivery=dl)
    flush_all(p)
    assert not dl.errors and len(dl.ok) == 40, dl.errors[:3]
    c = Consumer(conf(b, es, **{"group.id": "oauth-group", "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 40 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert len(got) == 40

    # kafka-python's token provider.
    from kafka import KafkaProducer
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        def token(self):
            return token(keys["rsa"], "rsa-1", "RS256", sub="carol")

    kp = KafkaProducer(bootstrap_servers=b.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Provider())
    kp.send(topic, b"from-kafka-python").get(timeout=30)
    kp.close()


@pytest.mark.parametrize("case", ["stranger", "expired", "audience", "issuer", "hmac", "no-kid-match"])
def test_bad_tokens_are_refused_and_others_go_on(broker_factory, tmp_path, keys, case):
    b = oauth_broker(broker_factory, tmp_path, keys)
    bad = {
        "stranger": lambda: token(keys["stranger"], "rsa-1", "RS256"),
        "expired": lambda: token(keys["rsa"], "rsa-1", "RS256", exp_in=-600),
        "audience": lambda: token(keys["rsa"], "rsa-1", "RS256", aud="someone-else"),
        "issuer": lambda: token(keys["rsa"], "rsa-1", "RS256", iss="https://evil.example"),
        "hmac": lambda: jwt.encode({"sub": "alice", "exp": int(time.time()) + 600, "aud": AUDIENCE,
                                    "iss": ISSUER}, "a-shared-secret-of-32-bytes-long!",
                                   algorithm="HS256", headers={"kid": "rsa-1"}),
        "no-kid-match": lambda: token(keys["rsa"], "nobody", "RS256"),
    }[case]
    ok, errors = logs_in(b, bad)
    assert not ok
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    wait_until(lambda: "token refused" in b.log_text(), timeout=10, desc="the refusal logged")
    good, _ = logs_in(b, lambda: token(keys["rsa"], "rsa-1", "RS256"))
    assert good, "a valid token still logs in"


def test_oauthbearer_needs_its_jwks(spate_bin, tmp_path):
    import subprocess
    r = subprocess.run([str(spate_bin), "serve", "--data-dir", str(tmp_path / "d"),
                        "--sasl-enabled-mechanisms", "OAUTHBEARER", "--print-config"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "sasl-oauthbearer-jwks-endpoint-url" in r.stderr, r.stderr
    r = subprocess.run([str(spate_bin), "serve", "--data-dir", str(tmp_path / "d"),
                        "--sasl-oauthbearer-jwks-endpoint-url", "https://idp.example/jwks",
                        "--print-config"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "only a file" in r.stderr, r.stderr


def test_sighup_reads_the_jwks_again(broker_factory, tmp_path, keys):
    """A key added to the JWKS file is trusted after SIGHUP; a JWKS that turned unreadable
    keeps the last good one."""
    import signal
    b = oauth_broker(broker_factory, tmp_path, keys)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new = lambda: token(new_key, "rsa-2", "RS256")  # noqa: E731
    assert not logs_in(b, new)[0]
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(keys["rsa"], "rsa-1", "RS256"),
                                         jwk_of(new_key, "rsa-2", "RS256")]}))
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: logs_in(b, new)[0], timeout=20, desc="the new key trusted after SIGHUP")
    jwks.write_text("not json")
    b.proc.send_signal(signal.SIGHUP)
    # Read again at the next login: reported, and the last good JWKS still serves.
    wait_until(lambda: logs_in(b, new)[0] and "the last good one stays" in b.log_text(),
               timeout=20, desc="the bad JWKS reported and the last good one used")
