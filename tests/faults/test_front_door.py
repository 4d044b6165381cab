"""The front door (issue 6, item 3): nginx in front of two `tally serve` instances (`tally front`);
one instance is SIGKILLed — its whole process group, as when its machine dies — during a steady
query and ingest load sent through nginx.

Checked against the truth: no acknowledged event is missing from Kafka (the topic is read back),
none is there twice (nginx never re-sends a POST that reached an instance), no query answered a
wrong number. The requests that fail during the switch are counted and bounded: only a request
in flight on the killed instance when it died can fail (a connection refused afterwards is
re-tried on the other instance for every method; a GET in flight is re-sent too, a POST is not),
and every client thread has one request in flight at a time — so at most one failure per client
thread, each started before the kill + 1 s. Then `front up` restarts the instance and nginx sends
it requests again.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time

from tests.integration.servekit import (
    D1, Load, consume, counts_step, day_ms, running_front, timed,
)

QUERY_THREADS, INGEST_THREADS, BATCH = 3, 3, 20


def ingest_step(url: str, prefix: str):
    def step(session, rnd, no, seq):
        now = int(time.time() * 1000)
        ids = [f"{prefix}-{no}-{seq}-{j}" for j in range(BATCH)]
        events = [{"event_id": i, "video_id": f"fd{rnd.randrange(30)}", "event_type": "view",
                   "ts": now - rnd.randrange(60_000), "watch_ms": rnd.randrange(10_000)}
                  for i in ids]

        def check(r):
            assert r.status_code == 202 and r.json() == {"accepted": BATCH, "rejected": []}, r.text
            return ids
        return timed("ingest", lambda: session.post(f"{url}/v1/events", json=events, timeout=30),
                     check)
    return step


def answered_by(session, url: str, master_pid: int) -> bool:
    """One /healthz through nginx: was it answered by a worker of ``master_pid``?"""
    pid = session.get(f"{url}/healthz", timeout=5).json()["pid"]
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == master_pid


def test_instance_killed_under_load(serving_world, unique):
    import requests

    from tally.devstack.provision import create_topics

    world = serving_world
    prefix = f"fd{unique}"
    # Its own topic: nothing archives what it ingests, and the shared world's topic must stay
    # empty for the batch runs of the other cases to call their days closed.
    cfg = world.inst.cfg.replace(kafka={"topic": f"{world.inst.cfg.kafka.topic}.fd{unique}"})
    create_topics(cfg, {cfg.kafka.topic: cfg.kafka.partitions})
    with running_front(cfg, fail_timeout_s=2) as front:
        url = front.parts["nginx"].endpoint
        load = Load()
        load.start(QUERY_THREADS, counts_step(world, url, day_ms(D1)), seed=1)
        load.start(INGEST_THREADS, ingest_step(url, prefix), seed=2)
        try:
            load.wait_for("a steady load before the kill",
                          lambda: len(load.done("counts")) >= 60 and len(load.done("ingest")) >= 30,
                          120)
            victim = front.pid("serve-1")
            os.killpg(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            os.waitpid(victim, 0)  # our child (front.up ran here): reap it
            load.wait_for("as much load after the kill",
                          lambda: len(load.done("counts", killed_at)) >= 60
                          and len(load.done("ingest", killed_at)) >= 30, 120)
            front.up()  # starts the missing instance only
            session = requests.Session()
            load.wait_for("the restarted instance answering through nginx",
                          lambda: answered_by(session, url, front.pid("serve-1")), 60)
        finally:
            load.finish()
        access_log = front.log_dir / "nginx-access.log"

    outcomes = load.done()
    wrong = [o for o in outcomes if o.wrong]
    failed = [o for o in outcomes if o.status not in (200, 202)]
    acked = {i for o in load.done("ingest") if o.data for i in o.data}
    records = consume(cfg, len(acked))
    in_kafka = collections.Counter(
        e["event_id"] for e in (json.loads(r.value) for r in records)
        if e["event_id"].startswith(prefix + "-"))
    lost = acked - set(in_kafka)
    duplicated = sum(c - 1 for c in in_kafka.values())
    retried = [json.loads(line) for line in access_log.read_text().splitlines()
               if ", " in json.loads(line)["upstream"]]
    print(f"\nfront door, one of 2 instances SIGKILLed: {len(outcomes)} requests "
          f"({len(load.done('counts'))} queries, {len(load.done('ingest'))} ingests of {BATCH}); "
          f"failed during the switch: {len(failed)} "
          f"({collections.Counter((o.kind, o.status) for o in failed)}); "
          f"re-sent by nginx to the other instance: {len(retried)} "
          f"({collections.Counter(r['method'] for r in retried)}); wrong answers: {len(wrong)}; "
          f"acknowledged events: {len(acked)}, lost: {len(lost)}, duplicated: {duplicated}, "
          f"in Kafka though not acknowledged: {len(set(in_kafka) - acked)}")
    assert not wrong, wrong[0].wrong
    assert not lost, sorted(lost)[:5]
    assert duplicated == 0
    assert len(failed) <= QUERY_THREADS + INGEST_THREADS, [(o.kind, o.status, o.detail) for o in failed]
    assert all(o.started <= killed_at + 1.0 for o in failed), \
        [(o.kind, o.status, round(o.started - killed_at, 3), o.detail) for o in failed]
    assert all(o.status is None or o.status == 502 for o in failed), \
        [(o.kind, o.status, o.detail) for o in failed]


FLOOD_KEY = "flood-key-0123456789"


def test_rate_limit_and_slow_clients_behind_the_front_door(serving_world, unique, tmp_path):
    """Two instances of two workers behind nginx share one rate limit: invented keys get no
    bucket (401), one client's address gets its burst once however its requests are spread (and
    whatever X-Forwarded-For it sends), a valid key gets its own; half-open connections wait in
    nginx, never in an instance; plain `tally serve` refuses a non-loopback bind."""
    import socket
    import subprocess
    import sys

    import requests

    cfg = serving_world.inst.cfg.replace(serve={
        "workers": 2, "rate_limit_per_s": 0.01, "rate_limit_burst": 10,
        "api_keys": (FLOOD_KEY,)})
    top = {"event_type": "view", "k": "3", "from": "2025-01-01T00:00:00Z",
           "to": "2025-01-02T00:00:00Z"}
    with running_front(cfg) as front:
        url = front.parts["nginx"].endpoint
        s = requests.Session()
        # A random key per request: refused, and it makes no bucket for itself.
        codes = collections.Counter(
            s.get(f"{url}/v1/top", params=top, headers={"X-API-Key": f"rnd-{unique}-{i:05d}"},
                  timeout=10).status_code for i in range(40))
        assert codes == {401: 40}, codes
        # Anonymous: one address, whatever it claims to be forwarded for. Fresh connections
        # (nginx spreads them over both instances and their workers).
        answers = [requests.get(f"{url}/v1/top", params=top, timeout=10,
                                headers={"X-Forwarded-For": f"10.9.{i // 250}.{i % 250}"})
                   for i in range(30)]
        codes = collections.Counter(r.status_code for r in answers)
        assert codes == {200: 10, 429: 20}, codes
        assert all(int(r.headers["Retry-After"]) >= 1 for r in answers if r.status_code == 429)
        # A valid key: its own bucket, limited the same way across instances.
        codes = collections.Counter(
            requests.get(f"{url}/v1/top", params=top, headers={"X-API-Key": FLOOD_KEY},
                         timeout=10).status_code for _ in range(15))
        assert codes == {200: 10, 429: 5}, codes

        # Slowloris: more half-open requests than the instances have workers (4).
        host, port = url.removeprefix("http://").rsplit(":", 1)
        idle = []
        try:
            for _ in range(16):
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                idle.append(sock)
            for _ in range(3):
                t0 = time.monotonic()
                r = requests.get(f"{url}/healthz", timeout=5)
                assert r.status_code == 200 and time.monotonic() - t0 < 2
                r = requests.get(f"{url}/v1/top", params=top, headers={"X-API-Key": FLOOD_KEY},
                                 timeout=5)
                assert r.status_code == 429  # reached an instance, answered at once
        finally:
            for sock in idle:
                sock.close()

    # Plain `tally serve` (sync workers) is not put where slow clients reach it.
    env = {**os.environ, "TALLY_STATE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "tally.cli", "serve", "--host", "0.0.0.0",
                        "--port", "1"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "slow clients" in r.stderr, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
