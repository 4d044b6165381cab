"""Serving-side fault cases (issue 6, item 4), against the real stack and ground truth:

* the Kafka broker SIGKILLed and restarted while Tally's producer and the HTTP ingest (through the
  front door) are sending: every acknowledged event reaches Kafka and is counted exactly once in
  the speed views written by the real streaming job;
* a query storm through the front door while the horizon moves (a day published by the real
  batch job, then a rollback): every answer equals the truth for its own horizon, none is a 5xx,
  and no worker answers from a publication state older than ``serve.catalog_ttl_s``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time

from tests.faults.faultkit import private_part
from tests.integration.servekit import (
    D0, D1, D2, Load, consume, counts_step, day_ms, iso, running_front, timed,
)
from tests.integration.speedkit import hbase_minutes, make_installation

BATCH = 20


def http_ingest_step(url: str, prefix: str):
    """POST batches of new events; a batch that was not acknowledged is sent again, same event
    ids, until it is (what a client does with a 503)."""
    pending: dict[int, list[dict]] = {}

    def step(session, rnd, no, seq):
        if no not in pending:
            now = int(time.time() * 1000)
            pending[no] = [{"event_id": f"{prefix}-h{no}-{seq}-{j}", "video_id": f"bk{rnd.randrange(20)}",
                            "event_type": rnd.choice(["view", "like"]), "ts": now - rnd.randrange(30_000),
                            "watch_ms": rnd.randrange(5_000)} for j in range(BATCH)]
        events = pending[no]

        def check(r):
            assert r.status_code == 202 and r.json()["accepted"] == BATCH, r.text
            del pending[no]
            return events
        out = timed("ingest", lambda: session.post(f"{url}/v1/events", json=events, timeout=30), check)
        if out.status != 202:
            time.sleep(0.2)  # a client's back-off before the retry
        return out
    return step


class ProducerLoad:
    """Tally's producer sending new events at ``rate`` per second from a thread; each send's
    future tells whether Kafka acknowledged it."""

    def __init__(self, cfg, prefix: str, rate: float = 200):
        from adapters.producer import TallyProducer

        self.producer = TallyProducer(cfg)
        self.prefix, self.rate = prefix, rate
        self.sent: list[tuple[dict, object]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import random

        from schemas.errors import ProducerError

        rnd, n, t0 = random.Random(7), 0, time.monotonic()
        while not self.stop.is_set():
            now = int(time.time() * 1000)
            event = {"event_id": f"{self.prefix}-p{n}", "video_id": f"bk{rnd.randrange(20)}",
                     "event_type": rnd.choice(["view", "like"]), "ts": now - rnd.randrange(30_000),
                     "watch_ms": rnd.randrange(5_000)}
            try:
                self.sent.append((event, self.producer.send_event(event)))
            except ProducerError as exc:  # send() could not even queue it (metadata timeout)
                self.errors.append(str(exc))
            n += 1
            ahead = n / self.rate - (time.monotonic() - t0)
            if ahead > 0:
                self.stop.wait(ahead)  # pacing the rate

    def finish(self) -> list[dict]:
        """Stop, flush, and return the acknowledged events."""
        from schemas.errors import ProducerError

        self.stop.set()
        self.thread.join(timeout=60)
        try:
            # Not longer: after an outage past kafka.delivery_timeout_ms the producer does not
            # deliver again (see the report line), and its close would wait for nothing.
            self.producer.close(timeout_s=20)
        except ProducerError as exc:
            self.errors.append(str(exc))
        return [e for e, fut in self.sent if fut.is_done and fut.succeeded()]


def speed_expected(events: list[dict]) -> dict[tuple[str, str, int], tuple[int, int]]:
    acc: dict = collections.defaultdict(lambda: [0, 0])
    for e in {e["event_id"]: e for e in events}.values():
        k = (e["video_id"], e["event_type"], e["ts"] // 60_000 * 60_000)
        acc[k][0] += 1
        acc[k][1] += e["watch_ms"]
    return {k: tuple(v) for k, v in acc.items()}


def test_kafka_broker_killed_while_sending(stack, tmp_path, unique):
    with private_part(stack, tmp_path / "broker", "kafka") as (broker, env):
        # The installation's own broker, killed and restarted; the shared one serves the tests
        # that run meanwhile.
        _broker_killed_while_sending(make_installation(stack, tmp_path, unique, **env), broker,
                                     f"bk{unique}")


def _broker_killed_while_sending(inst, broker, prefix: str) -> None:
    from speed_layer.store import HBaseSpeedStore

    stream = inst.start_stream("--trigger", "2s", "--archive-trigger", "10s")
    try:
        inst.wait_for_log("stream: queries speed")
        with running_front(inst.cfg) as front:
            load = Load()
            load.start(2, http_ingest_step(front.parts["nginx"].endpoint, prefix), seed=3)
            producer = ProducerLoad(inst.cfg, prefix)
            try:
                load.wait_for("ingest acknowledged before the kill",
                              lambda: sum(o.status == 202 for o in load.done()) >= 20
                              and len(producer.sent) >= 1000, 120)
                os.killpg(broker.pid("kafka"), signal.SIGKILL)
                killed_at = time.monotonic()
                load.wait_for("an ingest refused while the broker is down",
                              lambda: any(o.status != 202 for o in load.done("ingest", killed_at)), 60)
                down_s = time.monotonic() - killed_at
                broker.start_parts([broker.parts["kafka"]])  # waits until it answers
                back_at = time.monotonic()
                load.wait_for("ingest acknowledged again",
                              lambda: sum(o.status == 202 for o in load.done("ingest", back_at)) >= 20,
                              120)
            finally:
                load.finish()
                acked_p = producer.finish()
        outcomes = load.done()
        acked_h = [e for o in outcomes if o.status == 202 for e in o.data]
        acked = {e["event_id"] for e in acked_p + acked_h}
        records = consume(inst.cfg, len(acked))
        in_kafka = [json.loads(r.value) for r in records]
        ids = collections.Counter(e["event_id"] for e in in_kafka)
        lost = acked - set(ids)
        assert not lost, sorted(lost)[:5]
        # Exactly once end to end: the speed views hold every distinct event in Kafka once.
        want = speed_expected(in_kafka)
        deadline = time.monotonic() + 240
        while (got := hbase_minutes(inst.cfg)) != want and time.monotonic() < deadline:
            assert stream.poll() is None, inst.stream_log()
            time.sleep(1)
        before_stop = got
    finally:
        os.killpg(stream.pid, signal.SIGTERM)
        stream.wait(timeout=120)
    got = hbase_minutes(inst.cfg)  # nothing counted twice after the equality either
    progress = HBaseSpeedStore(inst.cfg).read_progress()
    print(f"\nkafka broker SIGKILLed for {down_s:.1f}s (+ restart) while sending: acknowledged "
          f"{len(acked_p)} by the producer ({len(producer.sent) - len(acked_p)} not, "
          f"{len(producer.errors)} errors) and {len(acked_h)} over HTTP "
          f"({sum(o.status != 202 for o in outcomes)} refused requests, re-sent); in Kafka "
          f"{len(in_kafka)} records, {len(ids)} distinct, lost {len(lost)}, "
          f"copies from re-sent requests {len(in_kafka) - len(ids)}, not acknowledged but in "
          f"Kafka {len(set(ids) - acked)}; speed views {sum(c for c, _ in got.values())} events "
          f"vs {len(ids)} distinct; dropped late {progress['dropped_late']}")
    assert before_stop == want, _diff(want, before_stop)
    assert got == want, _diff(want, got)
    assert progress["dropped_late"] == 0


def _diff(want: dict, got: dict) -> str:
    keys = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    return (f"{len(keys)} minutes differ, e.g. " +
            ", ".join(f"{k}: want {want.get(k)} got {got.get(k)}" for k in keys[:5]))


def top_step(world, url: str):
    def step(session, rnd, _no, _seq):
        lo = rnd.randint(day_ms(D0) - 3_600_000, day_ms(D2) + 12 * 3_600_000)
        hi = lo + rnd.randint(3_600_000, 2 * 86_400_000)
        etype, k = rnd.choice(["view", "like"]), rnd.choice([1, 10, 100])

        def check(r):
            body = r.json()
            flo, chi = lo // 60_000 * 60_000, -(-hi // 60_000) * 60_000
            assert body["items"] == world.expected_top(etype, flo, chi, k), (etype, iso(lo), iso(hi), k)
            # A rollback pins D0, and D1's version (deduplicated against D0's whole input) is
            # pending from then on: not exact, though before the horizon.
            pending = body["pending_days"]
            assert set(pending) <= {D1.isoformat()}, pending
            assert body["exact"] == (iso(chi) <= body["batch_horizon"] and not pending), \
                (iso(chi), body["batch_horizon"], pending)
            return body["batch_horizon"], {"pending": pending, "range": (flo, chi)}
        return timed("top", lambda: session.get(f"{url}/v1/top", params={
            "event_type": etype, "from": iso(lo), "to": iso(hi), "k": k}, timeout=30), check)
    return step


def test_query_storm_while_the_horizon_moves(serving_world):
    from batch_layer.catalog import Catalog

    world = serving_world
    catalog = Catalog(world.inst.cfg)
    d0, d1 = D0.isoformat(), D1.isoformat()
    ttl = world.inst.cfg.serve.catalog_ttl_s
    v1 = catalog.current(d0)["version"]
    h1, h2 = iso(day_ms(D1)), iso(day_ms(D2))
    with running_front(world.inst.cfg) as front:
        url = front.parts["nginx"].endpoint
        load = Load()
        load.start(6, counts_step(world, url, day_ms(D1)), seed=4)
        load.start(2, top_step(world, url), seed=5)
        try:
            load.wait_for("the storm under way", lambda: len(load.done()) >= 100, 120)
            # The real batch job: D0 recomputed as a new version, D1 published (H moves to D2).
            world.inst.tally("reprocess", "--from", d0, "--to", d1)
            published_at = time.monotonic()
            v2, vd1 = catalog.current(d0)["version"], catalog.current(d1)["version"]
            assert v2 != v1
            load.wait_for("answers after the publication",
                          lambda: len(load.done("counts", published_at + ttl)) >= 50, 120)
            rollback_started = time.monotonic()
            world.inst.tally("rollback", "--date", d0)
            rolled_back_at = time.monotonic()
            assert catalog.current(d0)["version"] == v1
            load.wait_for("answers after the rollback",
                          lambda: len(load.done("counts", rolled_back_at + ttl)) >= 50, 120)
        finally:
            load.finish()

    outcomes = load.done()
    not_ok = [(o.kind, o.status, o.detail) for o in outcomes if o.status != 200]
    wrong = [o.wrong for o in outcomes if o.wrong]
    assert not not_ok, not_ok[:5]
    assert not wrong, wrong[:3]
    states = collections.Counter()
    for o in outcomes:
        horizon, versions = o.data
        state = (horizon, (versions or {}).get(d0), (versions or {}).get(d1))
        states[state] += 1
        assert horizon in (h1, h2), horizon
        if o.started >= published_at + ttl:  # every worker has listed the log again by then
            assert horizon == h2, (round(o.started - published_at, 2), state)
        if o.kind == "top" and o.data[1]["range"][0] < day_ms(D2) and o.data[1]["range"][1] > day_ms(D1):
            if o.started >= rolled_back_at + ttl:
                assert o.data[1]["pending"] == [d1], (round(o.started - rolled_back_at, 2), o.data)
            elif published_at + ttl <= o.started < rollback_started:
                assert o.data[1]["pending"] == [], (round(o.started - published_at, 2), o.data)
        if o.kind == "counts":
            assert state[1] in (None, v1, v2) and state[2] in (None, vd1), state
            if o.started >= rolled_back_at + ttl and state[1] is not None:
                assert state[1] == v1, (round(o.started - rolled_back_at, 2), state)
            elif published_at + ttl <= o.started < rollback_started and state[1] is not None:
                assert state[1] == v2, (round(o.started - published_at, 2), state)
    print(f"\nquery storm, 8 clients through the front door while D1 was published and D0 "
          f"rolled back: {len(outcomes)} answers ({collections.Counter(o.kind for o in outcomes)}), "
          f"non-200: {len(not_ok)}, wrong: {len(wrong)}; states seen (horizon, D0 version, "
          f"D1 version): {dict(states)}")
    assert states[(h2, v1, vd1)] and states[(h2, v2, vd1)]
