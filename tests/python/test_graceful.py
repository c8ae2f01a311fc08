"""Graceful shutdown under load: SIGTERM while a producer streams with acks=all loses no
acknowledged message, exits 0 in bounded time, and the restart needs no recovery scan."""

import threading

from kafkautil import consume, create_topic, producer, unique_topic, wait_until


def test_sigterm_under_load_keeps_every_ack_and_restarts_clean(broker_factory, rng):
    b = broker_factory(shards=2)
    topic = unique_topic("graceful")
    create_topic(b.bootstrap, topic, 4)
    p = producer(b.bootstrap, **{"retries": 0, "linger.ms": 1, "message.timeout.ms": 5000})
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def on_delivery(err, msg):
        if err is None:
            with lock:
                acked[(msg.partition(), msg.offset())] = msg.value()

    def stream():
        i = 0
        while not stop.is_set():
            try:
                p.produce(topic, value=f"g{i}-{rng.random()}".encode(), on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            p.poll(0)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(acked) >= 2000, timeout=30, desc="2000 acks before the stop")
        b.stop()  # SIGTERM mid-stream; asserts exit 0 within the stop deadline
    finally:
        stop.set()
        t.join(timeout=10)
    p.purge()
    p.flush(1)
    stopped_log = b.log_text()
    assert "stopped cleanly" in stopped_log, stopped_log[-2000:]
    b.start()
    assert "recovery scan done" not in b.log_text(), "a clean stop must not need recovery"
    with lock:
        expected = dict(acked)
    by_part = {}
    for (part, off), v in expected.items():
        by_part.setdefault(part, {})[off] = v
    for part, offs in by_part.items():
        msgs = consume(b.bootstrap, [(topic, part)], max(offs) + 1, settle=0.2)
        log = {m.offset(): m.value() for m in msgs}
        for off, v in offs.items():
            assert log.get(off) == v, f"seed {rng.seed_value}: acked {v!r} at {part}/{off}, log has {log.get(off)!r}"
