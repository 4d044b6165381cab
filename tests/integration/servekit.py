"""Helpers of the serving-layer tests (tests/integration/test_serving.py, tests/faults/): the
"world" — one installation holding three generated days D0..D2 with their exact truth, D0
published as a batch view (so the horizon H is D1 00:00), the truth's minutes of D1 and D2 in the
speed views and WRONG counts on purpose in D0's speed views (a bucket before H answered from the
speed side shows up as a difference) — and the checks of an answer against the truth.

A world without Spark (:func:`build_published_world`, for the schema, page and lake tests, the
unit tests and bench/serve.py): :func:`publish_minutes` publishes a version of a day whose views
roll up given per-minute counts — the same files (``views/date=D/v=V/{minute,hour,day}/``, the
view schema, sorted as the job writes them) and publication entry fields the serving layer
reads, written through the lake store (file:// or S3) and the real Catalog. It stands in for the
batch job where the job's own output is not under test (the world above runs the real job)."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import random
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from schemas.event import format_ms, parse_rfc3339_ms
from tally.devstack.worlds import publish_minutes
from tests.integration.batchkit import load
from tests.integration.speedkit import make_installation, read_truth

DAY = 86_400_000
GRAN = {"minute": 60_000, "hour": 3_600_000, "day": DAY}
TODAY = dt.datetime.now(dt.timezone.utc).date()
D0, D1, D2 = (TODAY - dt.timedelta(days=n) for n in (3, 2, 1))


# The speed layer's progress record every world holds.
PROGRESS = {"max_event_time": "2026-11-27T10:00:00.000Z", "watermark": "2026-11-27T09:50:00.000Z",
            "updated_at": "2026-11-27T10:00:05Z", "dropped_late": 3}


def day_ms(d: dt.date | str) -> int:
    d = dt.date.fromisoformat(d) if isinstance(d, str) else d
    return int(dt.datetime.combine(d, dt.time(), dt.timezone.utc).timestamp() * 1000)


def iso(ms: int) -> str:
    return format_ms(ms)


def ms_day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date().isoformat()


class World:
    def __init__(self, inst, truth):
        self.inst = inst
        self.truth = truth  # (video, type, minute_ms) -> (count, watch_ms)
        by_vt = collections.defaultdict(dict)
        for (v, t, m), cw in truth.items():
            by_vt[(v, t)][m] = cw
        self.by_vt = by_vt
        self.videos = sorted({v for v, _t, _m in truth})

    def expected_buckets(self, video, etype, lo, hi, size):
        out = {b: [0, 0] for b in range(lo, hi, size)}
        for m, (c, w) in self.by_vt.get((video, etype), {}).items():
            if lo <= m < hi:
                out[m // size * size][0] += c
                out[m // size * size][1] += w
        return out

    def expected_top(self, etype, lo, hi, k):
        acc = collections.defaultdict(lambda: [0, 0])
        for (v, t, m), (c, w) in self.truth.items():
            if t == etype and lo <= m < hi:
                acc[v][0] += c
                acc[v][1] += w
        ranked = sorted(((v, c, w) for v, (c, w) in acc.items() if c > 0), key=lambda r: (-r[1], r[0]))
        return [{"video_id": v, "count": c, "watch_ms": w} for v, c, w in ranked[:k]]


def build_world(stack, root, spark_reader, events: int = 12000, videos: int = 80) -> World:
    from speed_layer.store import HBaseSpeedStore, MinuteCount

    inst = make_installation(stack, root, uuid.uuid4().hex[:10])
    staging, truth_path = root / "staging", root / "truth.parquet"
    inst.generate("--events", str(events), "--videos", str(videos), "--start", D0.isoformat(),
                  "--days", "3", "--seed", "23", "--duplicates", "0.05", "--late", "0.02",
                  "--archive-out", str(staging), "--truth", str(truth_path))
    load(spark_reader, inst.cfg, staging)
    from batch_layer.job import run_dates

    # `tally reprocess` of D0, in process on the reader's session (one JVM start fewer).
    report = run_dates(spark_reader, inst.cfg, [D0])
    assert [r.day for r in report.results if r.published] == [D0.isoformat()], report.lines()
    truth = {k: (v[0], v[1]) for k, v in read_truth(truth_path).items()}
    store = HBaseSpeedStore(inst.cfg)
    rows = []
    for (v, t, m), (c, w) in truth.items():
        if m >= day_ms(D1):
            rows.append(MinuteCount(v, t, m, c, w))
        else:  # wrong on purpose: the batch side must answer these
            rows.append(MinuteCount(v, t, m, c + 1000, w + 7))
    store.write_minutes(rows)
    store.write_progress(PROGRESS)
    return World(inst, truth)


def random_query(world, rnd: random.Random, horizon_ms: int):
    """A counts query (video, event type, granularity, lo, hi) over D0-1 .. D2+2: popular and
    unknown videos, every granularity, 40 % of ranges straddling ``horizon_ms`` with ends
    inside buckets."""
    span_lo, span_hi = day_ms(D0) - DAY, day_ms(D2) + 2 * DAY
    video = rnd.choice(world.videos[:10] if rnd.random() < 0.6 else world.videos + ["nobody"])
    etype = rnd.choice(["view", "view", "like", "share", "comment", "dislike"])
    gran = rnd.choice(["minute", "hour", "day"])
    max_len = {"minute": 2 * DAY, "hour": 5 * DAY, "day": 6 * DAY}[gran]
    if rnd.random() < 0.4:
        lo = horizon_ms - rnd.randint(1, max_len // 2)
        hi = horizon_ms + rnd.randint(1, max_len // 2)
    else:
        lo = rnd.randint(span_lo, span_hi)
        hi = lo + rnd.randint(1, max_len)
    return video, etype, gran, lo, hi


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive free ports below the ephemeral range."""
    from tally.devstack.stack import port_free

    rnd = random.Random()
    for _ in range(200):
        base = rnd.randrange(20_000, 32_000 - n)
        if all(port_free("127.0.0.1", base + i) for i in range(n)):
            return base
    raise AssertionError(f"no {n} consecutive free ports found")


@contextlib.contextmanager
def running_front(cfg, instances: int = 2, **front) -> Iterator:
    """`tally front` (nginx + ``instances`` `tally serve` processes) for ``cfg``'s installation
    on free ports; stopped on exit. Yields the :class:`tally.devstack.front.Front`."""
    from tally.devstack.front import Front

    base = free_port_block(instances + 1)
    cfg = cfg.replace(front={"port": base, "first_instance_port": base + 1,
                             "instances": instances, **front})
    f = Front(cfg)
    try:
        f.up()
        yield f
    finally:
        f.down()


def counts_params(etype, gran, lo, hi, from_raw=None, to_raw=None) -> dict[str, str]:
    return {"event_type": etype, "granularity": gran,
            "from": from_raw if from_raw is not None else iso(lo),
            "to": to_raw if to_raw is not None else iso(hi)}


def assert_counts(world, body, video, etype, gran, lo, hi, horizon_ms=None, versions=None):
    """``body`` (a 200 answer to counts of [lo, hi)) equals the truth bucket for bucket, each
    bucket's source agrees with the horizon, and the batch versions name the published days.
    ``horizon_ms`` None: the answer's own horizon is used (the caller checks it is one of the
    possible ones); ``versions`` (day -> version), when given, must hold every version named."""
    size = GRAN[gran]
    flo, chi = lo // size * size, -(-hi // size) * size
    assert body["from"] == iso(flo) and body["to"] == iso(chi)
    if horizon_ms is None:
        horizon_ms = parse_rfc3339_ms(body["batch_horizon"])
    want = world.expected_buckets(video, etype, flo, chi, size)
    got = {b["start"]: b for b in body["buckets"]}
    assert [b["start"] for b in body["buckets"]] == [iso(b) for b in sorted(want)]
    for b, (c, w) in want.items():
        item = got[iso(b)]
        assert (item["count"], item["watch_ms"]) == (c, w), (video, etype, gran, iso(b), item, (c, w))
        assert item["source"] == ("batch" if b < horizon_ms else "speed"), item
    assert body["total"] == sum(c for c, _ in want.values())
    assert body["watch_ms"] == sum(w for _, w in want.values())
    assert body["batch_horizon"] == iso(horizon_ms)
    batch_days = {ms_day(b) for b in want if b < horizon_ms}
    assert set(body["batch_versions"]) == batch_days
    for d, version in body["batch_versions"].items():  # null: before horizon_start, no raw data
        assert (version is None) == (d < D0.isoformat()), (d, version)
        if versions is not None and version is not None:
            assert version in versions[d], (d, version, versions[d])
    return body


def consume(cfg, expected: int, timeout_s: float = 60, topic: str | None = None):
    """The records of the installation's topic: until ``expected`` arrived, then 2 s more to
    see that nothing beyond them is there."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic or cfg.kafka.topic, bootstrap_servers=cfg.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(out) < expected:
            for records in consumer.poll(timeout_ms=1000).values():
                out.extend(records)
        end = time.monotonic() + 2
        while time.monotonic() < end:  # nothing more than expected
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
    finally:
        consumer.close()
    return out


@dataclass
class Outcome:
    """One request of a load: ``status`` None when no HTTP answer came; ``wrong`` says how a
    200 answer differed from the truth."""

    kind: str
    started: float
    ended: float
    status: int | None
    detail: str = ""
    wrong: str = ""
    data: Any = None


@dataclass
class Load:
    """Client threads, each with its own HTTP session and one request in flight at a time,
    looping until stopped; every outcome is recorded. A thread's step is
    ``fn(session, rnd, thread_no, seq) -> Outcome``."""

    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)

    def start(self, n: int, fn: Callable[..., Outcome], seed: int) -> None:
        import requests

        def loop(no: int) -> None:
            rnd, session, seq = random.Random(seed * 1000 + no), requests.Session(), 0
            try:
                while not self.stop.is_set():
                    self.outcomes.append(fn(session, rnd, no, seq))
                    seq += 1
            except Exception:  # noqa: BLE001 - a crashed load thread fails the test
                self.crashed.append(traceback.format_exc())

        for _ in range(n):
            t = threading.Thread(target=loop, args=(len(self.threads),), daemon=True)
            self.threads.append(t)
            t.start()

    def done(self, kind: str | None = None, after: float = 0.0) -> list[Outcome]:
        return [o for o in list(self.outcomes) if (kind is None or o.kind == kind)
                and o.started >= after]

    def wait_for(self, what: str, cond: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert not self.crashed, self.crashed[0]
            assert time.monotonic() < deadline, f"load: {what} not reached in {timeout_s}s"
            time.sleep(0.2)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        assert not self.crashed, self.crashed[0]


def timed(kind: str, send: Callable[[], Any], check: Callable[[Any], Any] | None = None
          ) -> Outcome:
    """Send one request; a 200/202 answer goes through ``check`` (an AssertionError there is a
    wrong answer; what it returns is kept as the outcome's data)."""
    import requests

    t0 = time.monotonic()
    try:
        r = send()
    except requests.RequestException as exc:
        return Outcome(kind, t0, time.monotonic(), None, f"{type(exc).__name__}: {exc}")
    out = Outcome(kind, t0, time.monotonic(), r.status_code)
    if r.status_code not in (200, 202):
        out.detail = r.text[:300]
        return out
    try:
        out.data = check(r) if check else None
    except AssertionError as exc:
        out.wrong = str(exc)[:500] or traceback.format_exc()[-500:]
    return out


def counts_step(world, url: str, horizon_hint: int) -> Callable[..., Outcome]:
    """A load step: one random counts query through ``url``, checked against the truth with
    the answer's own horizon; keeps (horizon, versions) of each answer."""
    def step(session, rnd, _no, _seq) -> Outcome:
        video, etype, gran, lo, hi = random_query(world, rnd, horizon_hint)

        def check(r):
            body = r.json()
            assert_counts(world, body, video, etype, gran, lo, hi)
            return body["batch_horizon"], body["batch_versions"]
        return timed("counts", lambda: session.get(
            f"{url}/v1/videos/{video}/counts", params=counts_params(etype, gran, lo, hi),
            timeout=30), check)
    return step


# -- a world without Spark: tally/devstack/worlds.py publishes views as the batch job writes them


def generated_truth(cfg, first_day: dt.date, days: int, events: int, videos: int,
                    seed: int) -> dict:
    """The generator's exact truth, in process: (video, type, minute ms) -> (count, watch_ms)."""
    from tally.devstack.generator import GeneratorOptions, build_traffic

    table = build_traffic(cfg, GeneratorOptions(events=events, videos=videos,
                                                start=first_day.isoformat(), days=days,
                                                seed=seed)).truth_table()
    return {(v, t, int(m.timestamp() * 1000)): (c, w) for v, t, m, c, w in zip(
        table["video_id"].to_pylist(), table["event_type"].to_pylist(),
        table["minute"].to_pylist(), table["count"].to_pylist(), table["watch_ms"].to_pylist())}


def build_published_world(inst, first_day: dt.date, days: int, batch_days: int,
                          events: int = 6000, videos: int = 40, seed: int = 7) -> World:
    """A world without Spark: ``days`` generated days from ``first_day`` (the generator's exact
    truth, in process), the first ``batch_days`` published with :func:`publish_minutes`
    (``batch.horizon_start`` must be ``first_day``), all of them in the speed views (wrong before
    the horizon), the progress record. ``world.horizon_ms`` is the horizon."""
    cfg = inst.cfg
    from speed_layer.store import HBaseSpeedStore, MinuteCount

    truth = generated_truth(cfg, first_day, days, events, videos, seed)
    horizon = day_ms(first_day) + batch_days * DAY
    per_day: dict = collections.defaultdict(list)
    speed = []
    for (v, t, m), (c, w) in truth.items():
        if m < horizon:
            per_day[m // DAY].append((v, t, m, c, w))
            speed.append(MinuteCount(v, t, m, c + 1000, w + 7))
        else:
            speed.append(MinuteCount(v, t, m, c, w))
    for i in range(batch_days):
        d = first_day + dt.timedelta(days=i)
        publish_minutes(cfg, d.isoformat(), per_day.get(day_ms(d) // DAY, []))
    store = HBaseSpeedStore(cfg)
    for i in range(0, len(speed), 1000):  # short calls: each has the store's retry budget
        store.write_minutes(speed[i:i + 1000])
    store.write_progress(PROGRESS)
    world = World(inst, truth)
    world.horizon_ms = horizon
    return world


@contextlib.contextmanager
def serving(app):
    """The app on a free local port, in a thread (werkzeug's threaded server): its base URL."""
    import threading

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="tally-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
