"""The client's retries and circuit breaker against a tiny local HTTP server (no services)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving_layer.client import CircuitBreaker, CircuitOpenError, ClientError, TallyClient


class Script:
    """Answers from a list of (status, headers) in order; the last one repeats."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []

    def next(self):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def server():
    script = Script([(200, {})])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            script.seen.append((self.path, self.headers.get("X-API-Key")))
            status, headers = script.next()
            body = json.dumps({"ok": True} if status < 400 else {"error": f"status {status}"}).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def make(url, **kw):
    sleeps = []
    c = TallyClient(url, sleep=sleeps.append, connect_timeout_s=1, read_timeout_s=2, **kw)
    return c, sleeps


def test_retries_503_then_succeeds_honouring_retry_after(server):
    url, script = server
    script.answers = [(503, {"Retry-After": "2"}), (503, {}), (200, {})]
    c, sleeps = make(url, api_key="secret-key-123456")
    assert c.request("GET", "/x") == {"ok": True}
    assert c.attempts == 3
    assert sleeps[0] == 2.0 and 0 <= sleeps[1] <= 0.4  # Retry-After, then jittered backoff
    assert script.seen[0][1] == "secret-key-123456"


def test_429_is_retried_and_does_not_trip_the_breaker(server):
    url, script = server
    script.answers = [(429, {"Retry-After": "1"})]
    breaker = CircuitBreaker(failure_threshold=2)
    c, sleeps = make(url, max_retries=3, breaker=breaker)
    with pytest.raises(ClientError) as e:
        c.request("GET", "/x")
    assert e.value.status == 429 and c.attempts == 4 and breaker.state == "closed"


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_4xx_is_not_retried(server, status):
    url, script = server
    script.answers = [(status, {})]
    c, sleeps = make(url)
    with pytest.raises(ClientError) as e:
        c.request("GET", "/x")
    assert e.value.status == status and not e.value.retriable
    assert c.attempts == 1 and sleeps == []


def test_backoff_is_exponential_with_full_jitter(server):
    url, script = server
    script.answers = [(500, {})]
    c, sleeps = make(url, max_retries=5, backoff_s=0.1, max_backoff_s=1.0,
                     breaker=CircuitBreaker(failure_threshold=100))
    with pytest.raises(ClientError) as e:
        c.request("GET", "/x")
    assert "gave up after 6 attempts" in str(e.value)
    caps = [0.1, 0.2, 0.4, 0.8, 1.0]
    assert len(sleeps) == 5 and all(0 <= s <= cap for s, cap in zip(sleeps, caps))


def test_connection_errors_are_retried_then_the_breaker_opens():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=10, clock=lambda: now[0])
    c, sleeps = make(f"http://127.0.0.1:{port}", max_retries=5, breaker=breaker)
    with pytest.raises(CircuitOpenError):
        c.request("GET", "/x")
    assert c.attempts == 3 and breaker.state == "open"  # the 4th attempt is refused locally
    with pytest.raises(CircuitOpenError):
        c.request("GET", "/x")
    assert c.attempts == 3


def test_breaker_half_open_trial(server):
    url, script = server
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_after_s=5, clock=lambda: now[0])
    script.answers = [(503, {})]
    c, _ = make(url, max_retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(ClientError):
            c.request("GET", "/x")
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        c.request("GET", "/x")
    now[0] = 5.0  # cool-down over: one trial, which fails -> open again
    with pytest.raises(ClientError) as e:
        c.request("GET", "/x")
    assert not isinstance(e.value, CircuitOpenError) and breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        c.request("GET", "/x")
    now[0] = 10.0
    script.answers = [(200, {})]
    assert c.request("GET", "/x") == {"ok": True}
    assert breaker.state == "closed" and breaker.failures == 0


def test_breaker_half_open_allows_one_trial_at_a_time():
    now = [0.0]
    b = CircuitBreaker(failure_threshold=1, reset_after_s=1, clock=lambda: now[0])
    b.record_failure()
    assert b.allow() > 0
    now[0] = 1.0
    assert b.allow() == 0 and b.state == "half-open"
    assert b.allow() > 0  # a second caller waits for the trial's outcome
    b.record_success()
    assert b.allow() == 0 and b.allow() == 0
