"""A small reverse proxy in front of the test SeaweedFS that injects faults by rule.

It forwards method, path, headers and body to one loopback endpoint and streams the
answer back; rules may instead answer 500 (or 503 SlowDown), stall past the client's
read timeout, or add a fixed delay; every request is counted by kind (GET, HEAD, PUT,
DELETE, POST, and LIST: a GET that lists, see ``request_kind``). Bounded: it refuses any
endpoint that is not on loopback, and ``stop`` (or leaving the ``with``) ends every
stalled request.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

# Hop-by-hop headers are the proxy's own business, never forwarded.
_HOP = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade",
}  # fmt: skip
_ERRORS = {500: ("InternalError", "injected by the fault proxy"),
           503: ("SlowDown", "injected by the fault proxy: slow down")}  # fmt: skip
# What a GET of a bucket itself (no key) reads when it is not a listing of its keys.
_BUCKET_READS = {
    "location", "acl", "policy", "policyStatus", "versioning", "lifecycle", "cors",
    "tagging", "website", "logging", "notification", "replication", "encryption",
    "object-lock", "ownershipControls", "publicAccessBlock", "accelerate",
    "requestPayment", "analytics", "metrics", "inventory", "intelligent-tiering",
}  # fmt: skip


def request_kind(method: str, target: str) -> str:
    """GET, HEAD, PUT, DELETE, POST, or LIST for a GET that lists (path-style addressing).

    ListObjectsV2 names itself (``list-type=2``); ListObjects v1, which aptly and rclone
    send, is a GET of the bucket with no key, as are the listings of versions and
    multipart uploads and, of the whole store, ListBuckets. A listing costs the store more
    as the bucket grows, so it is told apart from a GET of one object.
    """
    if method != "GET":
        return method
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    if "list-type" in query:
        return "LIST"
    no_key = "/" not in unquote(parts.path).strip("/")
    return "LIST" if no_key and not query.keys() & _BUCKET_READS else "GET"


@dataclass
class Rule:
    """What to do to matching requests, for the next ``times`` of them (None: always)."""

    action: str  # "error" | "stall"
    status: int = 500
    # A regular expression searched in the unquoted object key ("bucket/key"), or None.
    key: str | None = None
    methods: frozenset[str] | None = None  # kinds, e.g. {"PUT"}; None: any
    times: int | None = None
    # For "stall": forward the request first (the write happens, the answer is lost).
    forward_first: bool = False
    hits: int = 0

    def matches(self, kind: str, key: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.methods is not None and kind not in self.methods:
            return False
        return self.key is None or re.search(self.key, key) is not None


@dataclass(frozen=True)
class Seen:
    kind: str
    key: str
    status: int  # 0 for a stalled request that never got an answer
    fault: str | None


@dataclass
class FaultProxy:
    upstream: str
    delay: float = 0.0
    stall_seconds: float = 30.0
    rules: list[Rule] = field(default_factory=list)
    log: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        host = parts.hostname or ""
        if parts.scheme != "http" or not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the fault proxy only talks to loopback http, not {self.upstream}")
        self._target = (host, parts.port or 80)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._inflight = 0
        # The most requests the proxy held at once: how parallel the client really was.
        self.max_inflight = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- control ----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()
            self.max_inflight = 0

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(s.kind for s in self.log)

    def faults(self) -> int:
        with self._lock:
            return sum(1 for s in self.log if s.fault)

    def seen(self, kind: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if kind is None or s.kind == kind]

    # -- the proxy --------------------------------------------------------------------

    def _decide(self, kind: str, key: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(kind, key):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.log.append(seen)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                kind = request_kind(self.command, self.path)
                key = unquote(urlsplit(self.path).path).lstrip("/")
                body = self._body()
                with proxy._lock:
                    proxy._inflight += 1
                    proxy.max_inflight = max(proxy.max_inflight, proxy._inflight)
                try:
                    if proxy.delay:
                        time.sleep(proxy.delay)
                    self._act(kind, key, body)
                finally:
                    with proxy._lock:
                        proxy._inflight -= 1

            def _act(self, kind: str, key: str, body: bytes) -> None:
                rule = proxy._decide(kind, key)
                if rule is not None and rule.action == "error":
                    self._error(rule.status)
                    proxy._record(Seen(kind, key, rule.status, "error"))
                    return
                if rule is not None and rule.action == "stall":
                    if rule.forward_first:
                        self._forward(body, respond=False)
                    proxy._record(Seen(kind, key, 0, "stall"))
                    proxy._stopping.wait(proxy.stall_seconds)
                    self.close_connection = True
                    return
                status = self._forward(body, respond=True)
                proxy._record(Seen(kind, key, status, None))

            def _error(self, status: int) -> None:
                code, message = _ERRORS.get(status, ("InternalError", "injected"))
                payload = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _forward(self, body: bytes, *, respond: bool) -> int:
                conn = http.client.HTTPConnection(*proxy._target, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    if body or self.command in ("PUT", "POST"):
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    if not respond:
                        resp.read()
                        return resp.status
                    length = resp.getheader("Content-Length")
                    # Without a length the answer is read whole and sent with one.
                    data = None if length is not None else resp.read()
                    self.send_response(resp.status, resp.reason)
                    for name, value in resp.getheaders():
                        if name.lower() not in _HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    self.send_header("Content-Length", length or str(len(data or b"")))
                    self.end_headers()
                    if data is not None:
                        self.wfile.write(data)
                    elif self.command != "HEAD":
                        while chunk := resp.read(64 * 1024):
                            self.wfile.write(chunk)
                    return resp.status
                finally:
                    conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        return Handler
