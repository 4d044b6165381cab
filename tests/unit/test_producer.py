"""The producer's client replacement after expired batches, over a fake kafka-python client:
after a batch expired (an outage longer than the delivery timeout) the next send goes through a
new client; the expired and aborted sends are reported as not acknowledged, never lost silently."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError

from adapters import producer as producer_mod
from schemas.config import load_config
from schemas.errors import ProducerError


class FakeFuture:
    def __init__(self):
        self.is_done = False
        self.exception = None

    def finish(self, exc=None):
        self.is_done, self.exception = True, exc


class FakeKafkaProducer:
    made: list["FakeKafkaProducer"] = []

    def __init__(self, **settings):
        self.futures: list[FakeFuture] = []
        self.closed = False
        FakeKafkaProducer.made.append(self)

    def send(self, topic, value, key=None, timestamp_ms=None):
        assert not self.closed
        fut = FakeFuture()
        self.futures.append(fut)
        return fut

    def flush(self, timeout=None):
        for f in self.futures:
            if not f.is_done:
                f.finish()

    def close(self, timeout=None):
        self.closed = True
        for f in self.futures:  # kafka-python aborts what is still pending
            if not f.is_done:
                f.finish(KafkaTimeoutError("Producer closed forcefully"))


@pytest.fixture
def fake_kafka(monkeypatch):
    import kafka

    FakeKafkaProducer.made = []
    monkeypatch.setattr(kafka, "KafkaProducer", FakeKafkaProducer)
    return FakeKafkaProducer.made


def test_expired_batches_rebuild_the_client_and_are_reported(fake_kafka):
    p = producer_mod.TallyProducer(load_config(environ={}))
    first = fake_kafka[0]
    p.send_raw(b"a")
    p.send_raw(b"b")
    first.futures[0].finish(KafkaTimeoutError("Expiring 1 record(s): 60000 ms has passed"))
    p.tracker.reap()
    assert p.tracker.expired
    p.send_raw(b"c")  # goes through a new client; the old one is closed, "b" aborted
    assert len(fake_kafka) == 2 and first.closed and p.rebuilds == 1
    assert len(fake_kafka[1].futures) == 1
    assert not p.tracker.expired  # the aborted sends of the old client do not rebuild again
    p.send_raw(b"d")
    assert len(fake_kafka) == 2
    with pytest.raises(ProducerError) as err:
        p.flush()
    assert "2 event(s) not acknowledged" in str(err.value)  # "a" expired, "b" aborted
    assert p.tracker.acked == 2  # "c" and "d"


def test_no_rebuild_without_expiry(fake_kafka):
    p = producer_mod.TallyProducer(load_config(environ={}))
    for i in range(5):
        p.send_raw(b"x%d" % i)
    assert p.flush() == 5 and len(fake_kafka) == 1 and p.rebuilds == 0


def test_sends_pending_past_the_delivery_timeout_rebuild_the_client(fake_kafka):
    cfg = load_config(environ={})
    p = producer_mod.TallyProducer(cfg)
    now = [1000.0]
    p.tracker.clock = lambda: now[0]
    p.tracker._last_reap = now[0]
    p.send_raw(b"a")  # never completes: the broker came back but the client is stuck
    now[0] += cfg.kafka.delivery_timeout_ms / 1000 + 31
    p.send_raw(b"b")  # the periodic reap sees "a" pending too long ...
    assert p.tracker.expired and len(fake_kafka) == 1
    p.send_raw(b"c")  # ... and the next send goes through a new client
    assert len(fake_kafka) == 2 and fake_kafka[0].closed and p.rebuilds == 1
    with pytest.raises(ProducerError) as err:
        p.flush()
    assert "2 event(s) not acknowledged" in str(err.value)  # "a" and "b", aborted with the old client
    assert p.tracker.acked == 1


def test_a_client_that_cannot_be_closed_or_replaced_yet(fake_kafka, monkeypatch):
    """The stuck client's close raises (kafka-python flushes first); Kafka is still down when
    the replacement is tried: sends fail with a retriable error until it is back, and the stuck
    sends are reported as failed, not left pending forever."""
    from schemas.errors import DependencyError

    p = producer_mod.TallyProducer(load_config(environ={}))
    p.send_raw(b"a")
    stuck = fake_kafka[0]
    monkeypatch.setattr(stuck, "close", lambda timeout=None: (_ for _ in ()).throw(
        KafkaTimeoutError("Timeout waiting for future")))
    p.tracker.expired = True
    p._connect = lambda: (_ for _ in ()).throw(DependencyError("kafka", "down"))
    with pytest.raises(ProducerError) as err:
        p.send_raw(b"b")
    assert err.value.retriable and p.tracker.expired
    del p._connect  # Kafka is back
    p.send_raw(b"c")  # Kafka back: a new client
    assert p.rebuilds == 1 and len(fake_kafka) == 2
    with pytest.raises(ProducerError) as err:
        p.flush()
    assert "1 event(s) not acknowledged" in str(err.value) and p.tracker.acked == 1
