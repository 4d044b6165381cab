"""`tally stack` on a second, private stack (own state directory and ports): idempotent up,
data kept across down/up, a killed part reported unhealthy, a held port refused clearly, and a
producer whose broker died reporting the loss instead of hiding it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.config import load_config
from schemas.errors import ProducerError

PORTS = {"TALLY_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:19092", "TALLY_KAFKA__CONTROLLER_PORT": "19093",
         "TALLY_HBASE__PORT": "19090", "TALLY_HBASE__ZOOKEEPER_PORT": "12181",
         "TALLY_LAKE__S3_ENDPOINT": "http://127.0.0.1:15000", "TALLY_HBASE__SALT_BUCKETS": "4",
         "TALLY_KAFKA__PARTITIONS": "2"}


def tally(env: dict, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tally.cli", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    state = tmp_path_factory.mktemp("private-stack")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(PORTS, TALLY_STATE_DIR=str(state))
    cfg = load_config(environ=env)
    yield env, cfg
    tally(env, "stack", "down")


def status(env) -> dict:
    res = tally(env, "stack", "status", "--json", timeout=120)
    data = json.loads(res.stdout)
    return {"rc": res.returncode, "healthy": data["healthy"],
            **{p["part"]: p for p in data["parts"]}}


def test_stack_lifecycle(private, unique):
    import happybase
    from kafka import KafkaConsumer

    from adapters.producer import TallyProducer

    env, cfg = private
    t0 = time.monotonic()
    res = tally(env, "stack", "up")
    first_up_s = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    print(f"private stack up from an empty state directory: {first_up_s:.1f}s")
    before = status(env)
    assert before["rc"] == 0 and before["healthy"]
    pids = {p: before[p]["pid"] for p in ("kafka", "hbase", "hbase-thrift", "s3")}

    # up again: a no-op, the same processes.
    res = tally(env, "stack", "up")
    assert res.returncode == 0, res.stderr
    assert "started: nothing" in res.stderr
    assert {p: status(env)[p]["pid"] for p in pids} == pids

    # Data in Kafka, HBase and the file:// lake ...
    with TallyProducer(cfg) as producer:
        for i in range(50):
            producer.send_event({"event_id": f"s{unique}-{i}", "video_id": "v", "event_type": "like",
                                 "ts": int(time.time() * 1000)})
    conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port)
    conn.table(cfg.hbase.speed_table).put(b"\x01row", {b"m:c": b"42"})
    conn.close()
    marker = Path(cfg.lake_uri[len("file://"):]) / "marker.txt"
    marker.write_text("kept")

    # ... survives down then up.
    res = tally(env, "stack", "down")
    assert res.returncode == 0, res.stderr
    assert "in memory only" in res.stderr
    after_down = status(env)
    assert after_down["rc"] != 0 and not any(after_down[p]["running"] for p in pids)
    res = tally(env, "stack", "up")
    assert res.returncode == 0, res.stderr

    consumer = KafkaConsumer(cfg.kafka.topic, bootstrap_servers=cfg.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=5000)
    values = [json.loads(r.value)["event_id"] for r in consumer]
    consumer.close()
    assert sorted(values) == sorted(f"s{unique}-{i}" for i in range(50))
    conn = happybase.Connection(cfg.hbase.host, cfg.hbase.port)
    assert conn.table(cfg.hbase.speed_table).row(b"\x01row") == {b"m:c": b"42"}
    regions = conn.table(cfg.hbase.speed_table).regions()
    conn.close()
    assert len(regions) == 4
    assert marker.read_text() == "kept"

    # A killed part is reported unhealthy, with a non-zero exit.
    thrift_pid = status(env)["hbase-thrift"]["pid"]
    os.kill(thrift_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{thrift_pid}").exists():
        time.sleep(0.2)
    killed = status(env)
    assert killed["rc"] == 1 and not killed["healthy"]
    assert not killed["hbase-thrift"]["healthy"] and killed["kafka"]["healthy"]
    res = tally(env, "stack", "up")  # brings back only what is missing
    assert res.returncode == 0, res.stderr
    assert "started: hbase-thrift" in res.stderr
    assert status(env)["healthy"]

    # A producer whose broker dies reports what was not acknowledged.
    producer = TallyProducer(cfg, delivery_timeout_ms=6000, request_timeout_ms=3000,
                             max_block_ms=3000)
    producer.send_event({"event_id": "before", "video_id": "v", "event_type": "view",
                         "ts": int(time.time() * 1000)})
    producer.flush()
    os.kill(status(env)["kafka"]["pid"], signal.SIGKILL)
    time.sleep(0.5)  # let the kill land before sending; the assertion does not depend on it
    with pytest.raises(ProducerError) as info:
        for i in range(20):
            producer.send_event({"event_id": f"lost-{i}", "video_id": "v", "event_type": "view",
                                 "ts": int(time.time() * 1000)})
        producer.flush(timeout_s=30)
    assert "not acknowledged" in str(info.value) or "send failed" in str(info.value)
    try:
        producer.close(timeout_s=1)
    except ProducerError:
        pass


def test_held_port_is_refused_clearly(private, tmp_path):
    env, _ = private
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    other = dict(env, TALLY_STATE_DIR=str(tmp_path / "other"),
                 TALLY_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
                 TALLY_KAFKA__CONTROLLER_PORT="19193", TALLY_HBASE__PORT="19190",
                 TALLY_HBASE__ZOOKEEPER_PORT="12281", TALLY_LAKE__S3_ENDPOINT="http://127.0.0.1:15100")
    try:
        res = tally(other, "stack", "up")
    finally:
        held.close()
    assert res.returncode == 1
    line = res.stderr.strip().splitlines()[-1]
    assert f"kafka: port {port} is held by pid {os.getpid()}" in line
    assert not (tmp_path / "other" / "run" / "kafka.pid").exists()


def test_s3_endpoint_refuses_web_pages(tmp_path):
    """The S3 part as `tally stack up` starts it: no cross-origin request is granted CORS (a web
    page the operator opens cannot read the answers, nor preflight a PUT or DELETE), and what a
    page could still send blind as a simple request (a form upload, a text/plain POST ?delete,
    moto's reset) is refused before it reaches moto, as is a request for another Host (DNS
    rebinding). The lake's own client still works."""
    import urllib.error
    import urllib.request

    from adapters.lake import s3_client
    from tally.devstack.stack import Stack

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(TALLY_STATE_DIR=str(tmp_path / "state"),
               TALLY_LAKE__S3_ENDPOINT=f"http://127.0.0.1:{port}")
    cfg = load_config(environ=env)
    own = Stack(cfg)
    try:
        own.start_parts([own.parts["s3"]], "s3 up")
        client = s3_client(cfg)
        client.create_bucket(Bucket="lake")
        client.put_object(Bucket="lake", Key="a", Body=b"1")

        def ask(method: str, path: str, body: bytes | None = None, **headers: str):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         headers=headers, data=body)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, dict(r.headers)
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers)

        evil = {"Origin": "http://evil.example"}
        form = ('--b\r\nContent-Disposition: form-data; name="key"\r\n\r\nplanted\r\n--b\r\n'
                'Content-Disposition: form-data; name="file"; filename="f"\r\n\r\nx\r\n--b--\r\n')
        answers = {
            "preflight PUT": ask("OPTIONS", "/lake/a", **evil,
                                 **{"Access-Control-Request-Method": "PUT"}),
            "preflight DELETE on /": ask("OPTIONS", "/", **evil,
                                         **{"Access-Control-Request-Method": "DELETE"}),
            "GET /": ask("GET", "/", **evil),
            "no-cors GET": ask("GET", "/lake", **{"Sec-Fetch-Site": "cross-site"}),
            "form upload": ask("POST", "/lake", form.encode(), **evil,
                               **{"Content-Type": "multipart/form-data; boundary=b"}),
            "POST ?delete": ask("POST", "/lake?delete", b"<Delete><Object><Key>a</Key></Object>"
                                b"</Delete>", **evil, **{"Content-Type": "text/plain"}),
            "reset": ask("POST", "/moto-api/reset", b"", **evil, **{"Content-Type": "text/plain"}),
            "rebound Host": ask("GET", "/lake", Host=f"evil.example:{port}"),
        }
        for what, (status, headers) in answers.items():
            granted = {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}
            assert not granted, (what, granted)
            assert status == 403, (what, status)
        assert ask("GET", "/")[0] == 200  # a request without those headers is answered
        assert [o["Key"] for o in client.list_objects_v2(Bucket="lake")["Contents"]] == ["a"]
        assert own.pid("s3") is not None
    finally:
        own.down()
