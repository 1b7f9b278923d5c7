"""A small SMTP server on loopback for the tests: it takes mail (and keeps it), or hangs like a wedged server.

Speaks just enough of RFC 5321 for Django's SMTP backend (greeting, EHLO/HELO, MAIL, RCPT,
DATA, RSET, NOOP, QUIT). With ``hang`` set it accepts each connection and never says a word,
which is what a mail server stuck behind a dead proxy or a full disk looks like to a client.
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class SmtpSink:
    """What the server saw; flip ``hang`` to change how the next connections are answered."""

    host: str = "127.0.0.1"
    port: int = 0
    hang: bool = False
    connections: int = 0
    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> tuple[int, int]:
        """``(connections, messages)`` so far."""
        with self.lock:
            return self.connections, len(self.messages)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        sink = self.server.sink
        with sink.lock:
            sink.connections += 1
            hang = sink.hang
        if hang:
            # Hold the connection open, silent, until the client gives up (or the server stops).
            while not self.server.stopping.wait(0.2):
                try:
                    self.request.settimeout(0.2)
                    if self.request.recv(1024) == b"":
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return
            return
        self._converse(sink)

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def _converse(self, sink: SmtpSink) -> None:
        self._say("220 sink ESMTP")
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            verb = raw.decode(errors="replace").strip().split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._say("250 sink")
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                self._say("250 OK")
            elif verb == "DATA":
                self._say("354 End data with <CR><LF>.<CR><LF>")
                body = bytearray()
                while True:
                    line = self.rfile.readline()
                    if not line or line in (b".\r\n", b".\n"):
                        break
                    body += line
                with sink.lock:
                    sink.messages.append(bytes(body))
                self._say("250 OK queued")
            elif verb == "QUIT":
                self._say("221 Bye")
                return
            else:
                self._say("502 Command not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sink: SmtpSink) -> None:
        super().__init__((sink.host, sink.port), _Handler)
        self.sink = sink
        self.stopping = threading.Event()


class SmtpServer:
    """Serves an :class:`SmtpSink` from a thread: ``with SmtpServer() as sink: ...``."""

    def __init__(self, *, hang: bool = False) -> None:
        self.sink = SmtpSink(hang=hang)
        self._server = _Server(self.sink)
        self.sink.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="smtp-sink", daemon=True)

    def __enter__(self) -> SmtpSink:
        self._thread.start()
        return self.sink

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
