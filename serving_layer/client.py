"""A Python client of the REST API, used by ``tally query``.

* connect and read timeouts on every request;
* retries with exponential backoff and full jitter on retriable failures only — connection
  errors and timeouts, 503 and 429 (honouring ``Retry-After``, capped) and other 5xx — never on
  another 4xx, which is the caller's mistake and would fail again;
* a circuit breaker: after ``failure_threshold`` consecutive failed attempts it opens and
  requests fail at once (:class:`CircuitOpenError`) for ``reset_after_s``; then it is half-open:
  one trial request goes through, its success closes the breaker, its failure opens it again.
  A 4xx is an answer, not a failure of the service: it counts as a success for the breaker.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable

from schemas.errors import TallyError

RETRIABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class ClientError(TallyError):
    """The API answered with an error (``status``) or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None, retriable: bool = False,
                 body: Any = None):
        self.status = status
        self.retriable = retriable
        self.body = body
        super().__init__(message)


class CircuitOpenError(ClientError):
    def __init__(self, url: str, retry_in_s: float):
        super().__init__(f"{url}: circuit open after repeated failures; next trial in "
                         f"{retry_in_s:.1f}s", retriable=True)


class CircuitBreaker:
    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(self, failure_threshold: int = 5, reset_after_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.clock = clock
        self.state = self.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._trial_in_flight = False
        self._lock = threading.Lock()

    def allow(self) -> float:
        """0 when a request may go now, else the seconds until the next trial."""
        with self._lock:
            if self.state == self.OPEN:
                wait = self.opened_at + self.reset_after_s - self.clock()
                if wait > 0:
                    return wait
                self.state = self.HALF_OPEN
                self._trial_in_flight = False
            if self.state == self.HALF_OPEN:
                if self._trial_in_flight:
                    return max(self.reset_after_s / 10, 0.001)
                self._trial_in_flight = True
            return 0.0

    def record_success(self) -> None:
        with self._lock:
            self.state, self.failures, self._trial_in_flight = self.CLOSED, 0, False

    def record_failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.state == self.HALF_OPEN or self.failures >= self.failure_threshold:
                self.state, self.opened_at, self._trial_in_flight = self.OPEN, self.clock(), False


class TallyClient:
    def __init__(self, base_url: str, api_key: str | None = None, connect_timeout_s: float = 3.0,
                 read_timeout_s: float = 30.0, max_retries: int = 3, backoff_s: float = 0.2,
                 max_backoff_s: float = 5.0, breaker: CircuitBreaker | None = None,
                 sleep: Callable[[float], None] = time.sleep, session: Any = None):
        import requests

        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.breaker = breaker or CircuitBreaker()
        self.sleep = sleep
        self.session = session or requests.Session()
        self.attempts = 0  # requests actually sent, for tests and reports

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_backoff_s)
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))

    def request(self, method: str, path: str, params: dict | None = None,
                json_body: Any = None) -> Any:
        import requests

        url = f"{self.base_url}{path}"
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        last: ClientError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                retry_after = last.body.get("_retry_after") if isinstance(last.body, dict) else None
                self.sleep(self._delay(attempt - 1, retry_after))
            wait = self.breaker.allow()
            if wait:
                raise CircuitOpenError(self.base_url, wait)
            self.attempts += 1
            try:
                resp = self.session.request(method, url, params=params, json=json_body,
                                            headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self.breaker.record_failure()
                last = ClientError(f"{url}: {type(exc).__name__}: {exc}", retriable=True)
                continue
            try:
                body = resp.json()
            except ValueError:
                body = {"error": resp.text[:200]}
            if resp.status_code < 400:
                self.breaker.record_success()
                return body
            message = body.get("error", resp.reason) if isinstance(body, dict) else resp.reason
            if resp.status_code in RETRIABLE_STATUS:
                if resp.status_code != 429:
                    self.breaker.record_failure()
                else:
                    self.breaker.record_success()  # the service answered; it asks us to slow down
                if isinstance(body, dict):
                    body["_retry_after"] = resp.headers.get("Retry-After")
                last = ClientError(f"{resp.status_code}: {message}", resp.status_code, True, body)
                continue
            self.breaker.record_success()
            raise ClientError(f"{resp.status_code}: {message}", resp.status_code, False, body)
        assert last is not None
        raise ClientError(f"{last} (gave up after {self.max_retries + 1} attempts)", last.status,
                          True, last.body)

    # The API ---------------------------------------------------------------------------------
    def counts(self, video_id: str, start: str, end: str, event_type: str = "view",
               granularity: str = "hour") -> dict:
        return self.request("GET", f"/v1/videos/{video_id}/counts", params={
            "event_type": event_type, "from": start, "to": end, "granularity": granularity})

    def top(self, start: str, end: str, event_type: str = "view", k: int = 10) -> dict:
        return self.request("GET", "/v1/top", params={"event_type": event_type, "from": start,
                                                       "to": end, "k": k})

    def send_events(self, events: list[dict] | dict) -> dict:
        return self.request("POST", "/v1/events", json_body=events)


def render_counts(body: dict) -> str:
    """A terminal table of a counts answer."""
    lines = [f"{body['video_id']} {body['event_type']} per {body['granularity']}, "
             f"{body['from']} to {body['to']}",
             f"batch horizon {body.get('batch_horizon') or '-'}; "
             f"speed max event time {body['freshness'].get('speed_max_event_time') or '-'}",
             f"{'start':<26}{'count':>10}{'watch_ms':>16}  source"]
    for b in body["buckets"]:
        flags = " ".join(f for f in ("unavailable", "beyond_retention") if b.get(f))
        c = "-" if b["count"] is None else str(b["count"])
        w = "-" if b["watch_ms"] is None else str(b["watch_ms"])
        lines.append(f"{b['start']:<26}{c:>10}{w:>16}  {b['source']}{' ' + flags if flags else ''}")
    lines.append(f"{'total':<26}{body['total']:>10}{body['watch_ms']:>16}")
    for w in body.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def render_top(body: dict) -> str:
    """A terminal table of a top answer."""
    lines = [f"top {len(body['items'])} {body.get('event_type', '')} from {body.get('from', '-')} "
             f"to {body.get('to', '-')} ({'exact' if body.get('exact') else 'approximate'})",
             f"batch horizon {body.get('batch_horizon') or '-'}",
             f"{'#':>3}  {'video_id':<32}{'count':>12}{'watch_ms':>16}"]
    for rank, item in enumerate(body["items"], 1):
        lines.append(f"{rank:>3}  {item['video_id']:<32}{item['count']:>12}{item['watch_ms']:>16}")
    for w in body.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)

