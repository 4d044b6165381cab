"""A TCP proxy on 127.0.0.1 that a fault case can cut: every open connection is reset and new
ones are refused until it is restored. Used in front of the S3 endpoint (the moto server keeps
its data in memory, so it must not be killed to make the lake unreachable)."""

from __future__ import annotations

import socket
import struct
import threading


class TcpProxy:
    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._listener.listen(64)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cut_now = False
        self.connections = 0
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Reset every open connection and refuse new ones."""
        with self._lock:
            self.cut_now = True
            for s in list(self._open):
                _reset(s)
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self.cut_now = False

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self.cut_now:
                    self.refused += 1
                    _reset(client)
                    continue
                try:
                    server = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    _reset(client)
                    continue
                server.settimeout(None)
                self._open.update((client, server))
                self.connections += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:  # one side ended: the pair is done
                for s in (src, dst):
                    self._open.discard(s)
                    s.close()


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dead network path looks to the peer."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    except OSError:
        pass
