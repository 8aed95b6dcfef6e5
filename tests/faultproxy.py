"""A fault-injecting TCP proxy on 127.0.0.1 between triggerfs (or the
client) and the local API server, driven from the test:

    proxy = FaultProxy(server.port)          # pass-through
    mount = mount_factory(api_url=proxy.url)
    proxy.stall()        # connections stay open, no byte moves either way
    proxy.stall(new=False)  # only the connections open now stall
    proxy.passthrough()  # everything flows again (held bytes included)
    proxy.cut_all()      # reset every open connection now
    proxy.cut_after_request("POST")  # each POST reaches the server, its
                                     # answer is dropped and the connection reset
    proxy.delay(0.5)     # every chunk waits 0.5 s each way
    proxy.refuse()       # new connections: ECONNREFUSED (open ones go on)
    proxy.close()

With answers=True it forwards whole requests and follows the answers'
framing, so that it can also play the real server's faults:

    proxy.answer("GET", "/api/v3/runs/run_1", 404, {"error": "Not found"},
                 {"x-should-retry": "true"}, seconds=3)   # or times=N
    proxy.sse_error("boom")  # each open event stream: at its next event
                             # boundary, "event: error" and the end

It runs its own asyncio loop in a thread; every method is synchronous and
thread-safe. Requests are recorded as (method, path, headers) with the
Authorization header replaced by the credential's kind ("secret", "jwt");
for a JWT, headers[":claims"] holds its decoded claims. With
watch=b"...", headers[":saw-watched"] says whether those bytes were anywhere
in the request (headers or body), e.g. a secret key that must only go to
one endpoint. It understands just enough HTTP/1.1 (request line, headers,
Content-Length) to count requests and to cut after one; it never changes a
byte that it forwards."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import threading
import time
from typing import Optional

HOST = "127.0.0.1"
CHUNK = 65536
# With cut_after_request: reset even if the server has not answered by then.
CUT_ANSWER_WAIT = 5.0


def _reset_on_close(writer: asyncio.StreamWriter) -> None:
    """SO_LINGER 0: closing sends RST, as a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


def _credential_kind(value: str) -> str:
    token = value.partition(" ")[2]
    return "secret" if token.startswith("tr_") else "jwt" if token.startswith("eyJ") else "other"


def _jwt_claims(value: str) -> Optional[dict]:
    """The payload of a Bearer JWT (not verified), or None."""
    parts = value.partition(" ")[2].split(".")
    if len(parts) != 3:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None


class _Requests:
    """Splits one connection's client bytes into HTTP/1.1 requests."""

    def __init__(self, watch: Optional[bytes] = None) -> None:
        self.head = b""
        self.body_left = 0      # body bytes of the current request still to come
        self.current: Optional[tuple] = None
        self.watch = watch
        self.tail = b""         # the body's last bytes, for a match across chunks

    def feed(self, data: bytes) -> list:
        """-> (method, path, {lowercase header: value}) of each request
        completed by `data`."""
        done = []
        while data:
            if self.current is not None:
                take = min(self.body_left, len(data))
                self._scan(data[:take])
                self.body_left -= take
                data = data[take:]
                if self.body_left == 0:
                    done.append(self.current)
                    self.current = None
                continue
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return done
            head, data = self.head[:end], self.head[end + 4:]
            self.head = b""
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "authorization" in headers:     # never keep a credential
                claims = _jwt_claims(headers["authorization"])
                if claims is not None:
                    headers[":claims"] = claims
                headers["authorization"] = _credential_kind(headers["authorization"])
            self.body_left = int(headers.get("content-length") or 0)
            self.current = (parts[0], parts[1] if len(parts) > 1 else "", headers)
            if self.watch is not None:
                headers[":saw-watched"] = self.watch in head
                self.tail = b""
            if self.body_left == 0:
                done.append(self.current)
                self.current = None
        return done

    def _scan(self, body: bytes) -> None:
        if self.watch is None:
            return
        window = self.tail + body
        if self.watch in window:
            self.current[2][":saw-watched"] = True
        self.tail = window[-len(self.watch):]


class Rule:
    """Requests (method, path exactly) the proxy answers itself."""

    def __init__(self, method: str, path: str, status: int, body, headers: Optional[dict],
                 times: Optional[int], seconds: Optional[float]) -> None:
        self.method, self.path, self.status = method, path, status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.headers = dict(headers or {})
        self.times = times
        self.until = time.monotonic() + seconds if seconds is not None else None
        self.hits: list = []        # monotonic times of the answers given

    def live(self) -> bool:
        return ((self.times is None or len(self.hits) < self.times) and
                (self.until is None or time.monotonic() < self.until))

    def response(self) -> bytes:
        headers = {"Content-Type": "application/json; charset=utf-8", **self.headers,
                   "Content-Length": str(len(self.body))}
        head = f"HTTP/1.1 {self.status} Fault\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items())
        return head.encode() + b"\r\n" + self.body


def _split_request(buf: bytes):
    """-> (one whole request, the rest) or (None, buf)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None, buf
    length = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    total = end + 4 + length
    if len(buf) < total:
        return None, buf
    return buf[:total], buf[total:]


class _Answers:
    """Follows answers on one connection (heads, chunked or sized bodies):
    which one is an event stream and whether its bytes so far end at an
    event boundary, where an "event: error" can go in."""

    def __init__(self) -> None:
        self.buf = b""
        self.state = "head"
        self.left = 0               # of a sized body or a chunk's data
        self.sse = False
        self.tail = b"\n\n"        # the body's last bytes
        self.chunked = False

    def at_boundary(self) -> bool:
        return (self.sse and self.chunked and self.state == "size" and not self.buf and
                (self.tail.endswith(b"\n\n") or self.tail.endswith(b"\r\n\r\n")))

    def feed(self, data: bytes) -> list:
        """-> the data cut where an event boundary falls (to inject there)."""
        pieces, start = [], 0
        self.buf += data
        data, self.buf = self.buf, b""
        i = 0
        while i < len(data):
            if self.state == "head":
                end = data.find(b"\r\n\r\n", i)
                if end < 0:
                    self.buf = data[i:]
                    break
                self._head(data[i:end])
                i = end + 4
            elif self.state in ("body", "data"):
                take = min(self.left, len(data) - i)
                self.tail = (self.tail + data[i:i + take])[-4:]
                self.left -= take
                i += take
                if self.left == 0:
                    self.state = "crlf" if self.state == "data" else "head"
            elif self.state in ("size", "crlf", "trailer"):
                end = data.find(b"\r\n", i)
                if end < 0:
                    self.buf = data[i:]
                    break
                line, i = data[i:end], end + 2
                if self.state == "crlf":
                    self.state = "size"
                    if self.at_boundary():
                        pieces.append(data[start:i])
                        start = i
                elif self.state == "trailer":
                    self.state = "trailer" if line else "head"
                else:
                    self.left = int(line.split(b";")[0], 16)
                    self.state = "data" if self.left else "trailer"
            else:                   # "close": the body runs to the end
                i = len(data)
        pieces.append(data[start:len(data) - len(self.buf)])
        return pieces

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        if status < 200:
            return
        self.sse = fields.get(b"content-type", b"").startswith(b"text/event-stream")
        self.chunked = fields.get(b"transfer-encoding") == b"chunked"
        self.tail = b"\n\n"
        if self.chunked:
            self.state = "size"
        elif b"content-length" in fields:
            self.left = int(fields[b"content-length"])
            self.state = "body" if self.left else "head"
        else:
            self.state = "close"


class _Conn:
    def __init__(self, client_w: asyncio.StreamWriter, watch: Optional[bytes]) -> None:
        self.client_w = client_w
        self.upstream_w: Optional[asyncio.StreamWriter] = None
        self.requests = _Requests(watch)
        self.cut_pending: Optional[float] = None   # when the request went up
        self.tasks: list = []
        self.flowing = asyncio.Event()
        self.held = 0               # bytes read from the client, not yet forwarded
        self.upbuf = b""            # answers mode: a request not yet whole
        self.answers = _Answers()
        self.error_text: Optional[str] = None   # sse_error() pending

    def abort(self) -> None:
        for w in (self.client_w, self.upstream_w):
            if w is not None:
                _reset_on_close(w)
                w.transport.abort()
        for t in self.tasks:
            t.cancel()


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = HOST, port: int = 0,
                 watch: Optional[bytes] = None, answers: bool = False):
        self.upstream = (upstream_host, upstream_port)
        self.answers = answers
        self.rules: list = []
        self.errors_sent = 0          # "event: error"s injected
        self.watch = watch
        self.port = port
        self.connections = 0          # accepted so far
        self.requests: list = []      # (method, path, headers) of every request forwarded
        self.cuts = 0                 # connections reset by cut_all/cut_after_request
        self._conns: set = set()
        self._stall_new = False
        self._delay = 0.0
        self._cut_methods: Optional[tuple] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="faultproxy")
        self._thread.start()
        self._call(self._init())

    # ---- control (any thread)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def passthrough(self) -> None:
        """No faults: end a stall (held bytes flow), no delay, no cutting,
        accept new connections."""
        self._call(self._set(flowing=True, delay=0.0, cut=None, listen=True))

    def stall(self, new: bool = True) -> None:
        """Open connections (and with new=True, new ones too) stay open, but
        no byte moves either way until passthrough()."""
        self._call(self._set(flowing=False, stall_new=new))

    def delay(self, seconds: float) -> None:
        self._call(self._set(delay=seconds))

    def cut_all(self) -> int:
        """Reset every open connection now; returns how many."""
        return self._call(self._cut_all())

    def cut_after_request(self, *methods: str) -> None:
        """From now on, each request (of these methods; all if none given) is
        forwarded whole, the server's answer is swallowed and the connection
        reset: the server did the work, the client never hears of it."""
        self._call(self._set(cut=tuple(m.upper() for m in methods) or ()))

    def answer(self, method: str, path: str, status: int, body=b"",
               headers: Optional[dict] = None, times: Optional[int] = None,
               seconds: Optional[float] = None) -> Rule:
        """Answer these requests here (the server never sees them), `times`
        times or for `seconds` (both None: until clear_answers)."""
        assert self.answers, "FaultProxy(..., answers=True) needed"
        rule = Rule(method, path, status, body, headers, times, seconds)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear_answers(self) -> None:
        with self._lock:
            self.rules.clear()

    def sse_error(self, text: str = "Stream read failed") -> None:
        """Each event stream open now gets, at its next event boundary,
        "event: error" with `text`, and then its end (no [DONE]), as the
        real server ends a read that failed."""
        assert self.answers, "FaultProxy(..., answers=True) needed"
        self._call(self._sse_error(text))

    def refuse(self) -> None:
        """Stop listening: new connections get ECONNREFUSED."""
        self._call(self._set(listen=False))

    def accept(self) -> None:
        self._call(self._set(listen=True))

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._conns)

    def requests_to(self, method: str, path_prefix: str = "") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests
                       if m == method and p.startswith(path_prefix))

    def held(self) -> int:
        """Bytes a stall holds back from the server right now."""
        with self._lock:
            return sum(c.held for c in self._conns)

    def requests_list(self) -> list:
        with self._lock:
            return list(self.requests)

    def wait(self, predicate, timeout: float = 10.0, what: str = "proxy condition"):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.01)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the loop side

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    async def _init(self) -> None:
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, HOST, self.port,
                                                      reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _set(self, flowing: Optional[bool] = None, delay: Optional[float] = None,
                   cut: object = False, listen: Optional[bool] = None,
                   stall_new: bool = False) -> None:
        if flowing is not None:
            self._stall_new = not flowing and stall_new
            for c in self._conns:
                if flowing:
                    c.flowing.set()
                else:
                    c.flowing.clear()
        if delay is not None:
            self._delay = delay
        if cut is not False:
            self._cut_methods = cut
        if listen is True:
            await self._listen()
        elif listen is False and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _sse_error(self, text: str) -> None:
        for c in list(self._conns):
            if c.answers.sse:
                c.error_text = text
                if c.answers.at_boundary():
                    self._inject_error(c)

    def _inject_error(self, conn: _Conn) -> None:
        event = f"event: error\ndata: {conn.error_text}\n\n".encode()
        conn.error_text = None
        conn.client_w.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
        self.errors_sent += 1
        # The stream is over: the connection goes with it.
        asyncio.get_running_loop().call_later(0.05, self._close_conn, conn)

    def _close_conn(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)
        for t in conn.tasks:
            t.cancel()
        for w in (conn.client_w, conn.upstream_w):
            if w is not None:
                w.close()

    def _answer_here(self, method: str, path: str) -> Optional[bytes]:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.path == path and rule.live():
                    rule.hits.append(time.monotonic())
                    return rule.response()
        return None

    async def _cut_all(self) -> int:
        conns = list(self._conns)
        for c in conns:
            self._drop(c)
        self.cuts += len(conns)
        return len(conns)

    async def _shutdown(self) -> None:
        await self._set(flowing=True, listen=False)
        await self._cut_all()

    def _drop(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)
        conn.abort()

    async def _handle(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        conn = _Conn(client_w, self.watch)
        if not self._stall_new:
            conn.flowing.set()
        with self._lock:
            self.connections += 1
            self._conns.add(conn)
        try:
            up_r, conn.upstream_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._drop(conn)        # upstream down: the client sees a reset
            return
        conn.tasks = [asyncio.ensure_future(self._pump(conn, client_r, conn.upstream_w, True)),
                      asyncio.ensure_future(self._pump(conn, up_r, client_w, False))]
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._drop(conn)

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader,
                    dst: asyncio.StreamWriter, upward: bool) -> None:
        while True:
            try:
                data = await src.read(CHUNK)
            except OSError:
                data = b""
            if not data:
                # A half close passes through; the other direction goes on.
                if dst.can_write_eof() and not dst.is_closing():
                    dst.write_eof()
                return
            if upward:
                conn.held += len(data)
            await conn.flowing.wait()
            if upward:
                conn.held -= len(data)
            if self._delay:
                await asyncio.sleep(self._delay)
            if upward and self.answers:
                data = self._requests_up(conn, data)
            elif upward:
                self._count(conn, data)
            elif conn.cut_pending is not None:
                self._cut(conn)     # the answer arrived: swallow it
                return
            elif self.answers:
                if self._answers_down(conn, data, dst):
                    return
                data = b""
            if data:
                dst.write(data)
            try:
                await dst.drain()
            except OSError:
                return
            if upward and conn.cut_pending is not None:
                asyncio.get_running_loop().call_later(CUT_ANSWER_WAIT, self._cut, conn)

    def _requests_up(self, conn: _Conn, data: bytes) -> bytes:
        """Whole requests only; those a rule answers are answered here."""
        out = []
        conn.upbuf += data
        while True:
            req, conn.upbuf = _split_request(conn.upbuf)
            if req is None:
                return b"".join(out)
            self._count(conn, req)
            line = req.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            canned = self._answer_here(line[0], line[1] if len(line) > 1 else "")
            if canned is None:
                out.append(req)
            else:
                conn.client_w.write(canned)

    def _answers_down(self, conn: _Conn, data: bytes, dst: asyncio.StreamWriter) -> bool:
        """Forward an answer's bytes; an error waiting goes in at the first
        event boundary.  Returns True when the connection ended there."""
        for piece in conn.answers.feed(data):
            dst.write(piece)
            if conn.error_text is not None and conn.answers.at_boundary():
                self._inject_error(conn)
                return True
        return False

    def _count(self, conn: _Conn, data: bytes) -> None:
        for method, path, headers in conn.requests.feed(data):
            with self._lock:
                self.requests.append((method, path, headers))
            cut = self._cut_methods
            if cut is not None and (not cut or method in cut):
                conn.cut_pending = time.monotonic()

    def _cut(self, conn: _Conn) -> None:
        if conn in self._conns:
            self.cuts += 1
            self._drop(conn)
