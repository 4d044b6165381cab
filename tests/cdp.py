"""A small headless-Chromium driver over the DevTools protocol (CDP), for the dashboard test and
the screenshot script (``tests/dashboard_png.py``): Debian's ``chromium`` and the
``websocket-client`` package, no browser download and no separate driver binary.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


class BrowserError(AssertionError):
    """The page threw, or a condition did not hold in time."""


class Browser:
    def __init__(self, width: int = 1280, height: int = 900, chromium: str = CHROMIUM,
                 timeout_s: float = 30.0) -> None:
        import websocket

        self.timeout_s = timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="tally-chromium-"))
        self.log = open(self.dir / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.dir / 'profile'}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._id = 0
        try:
            port = self._devtools_port()
            page = next(t for t in self._json(port, "list") if t["type"] == "page")
            self.ws = websocket.create_connection(page["webSocketDebuggerUrl"],
                                                  timeout=timeout_s, suppress_origin=True)
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        marker = self.dir / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise BrowserError(f"chromium did not open its DevTools port: "
                           f"{(self.dir / 'chromium.log').read_text(errors='replace')[-2000:]}")

    @staticmethod
    def _json(port: int, what: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/{what}", timeout=10) as r:
            return json.load(r)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # events arrive in between; only the answer to this call matters
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise BrowserError(f"{expression[:80]}: {d.get('exception', {}).get('description') or d}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float | None = None) -> Any:
        """Poll until ``expression`` is truthy; returns its value."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"not true after {timeout_s or self.timeout_s}s: {expression}")
            time.sleep(0.05)

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def screenshot(self, path: str | Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path = Path(path)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
